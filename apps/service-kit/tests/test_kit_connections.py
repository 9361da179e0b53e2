"""The total request deadline and the per-client connection cap, reproduced on loopback as the
review did: a slow-loris client trickling one byte a second, and one client opening more
connections than its share while another client is still served."""

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from tdx_service_kit import HttpLimits, install_common
from tdx_service_kit._connections import GUARD_ATTRIBUTE, ConnectionGuard
from tdx_service_kit.testing import serve

DEADLINE = 2.5
TRICKLE_SECONDS = 1.0


def make_app(name: str, limits: HttpLimits) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name)
    install_common(app, limits=limits, rate_limit=None)

    @app.get("/ok")
    async def ok(request: Request) -> HTTPResponse:
        return json_response({"ok": True})

    @app.post("/echo")
    async def echo(request: Request) -> HTTPResponse:
        return json_response({"length": len(request.body)})

    return app


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def _read_all(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything until the server closes the connection (or a reset, which also ends it)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except ConnectionResetError:
        return b""


def _status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return status, parsed


async def _get(host: str, port: int, *, source: str | None = None) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None
    )
    writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await _read_all(reader, 5.0)
    writer.close()
    return _status_and_body(raw)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, stop: asyncio.Event) -> int:
    sent = 0
    for byte in data:
        if stop.is_set():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.sleep(TRICKLE_SECONDS)
    return sent


async def _slow_loris(url: str, request: bytes) -> tuple[float, bytes, int]:
    """Trickle `request` one byte a second; the seconds until the server closed, its answer and
    the bytes sent."""
    host, port = _address(url)
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    stop = asyncio.Event()
    trickler = asyncio.create_task(_trickle(writer, request, stop))
    raw = await _read_all(reader, DEADLINE + 10.0)
    elapsed = time.monotonic() - started
    stop.set()
    sent = await trickler
    writer.close()
    return elapsed, raw, sent


async def test_slow_loris_head_is_cut_at_the_deadline(app_name: str) -> None:
    # The idle timer (request_timeout) is far longer than the trickle's pace, as in the review.
    limits = HttpLimits(request_timeout=30.0, request_deadline=DEADLINE)
    async with serve(make_app(app_name, limits)) as url:
        elapsed, raw, sent = await _slow_loris(
            url, b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 60 + b"\r\n\r\n"
        )
    status, body = _status_and_body(raw)
    assert status == 408
    assert "not received within 2.5 seconds" in body["error"]
    assert DEADLINE - 0.2 <= elapsed < DEADLINE + 2.0
    assert sent <= DEADLINE / TRICKLE_SECONDS + 2


async def test_slow_loris_body_is_cut_at_the_deadline_and_not_drained(app_name: str) -> None:
    limits = HttpLimits(request_timeout=30.0, response_timeout=60.0, request_deadline=DEADLINE)
    app = make_app(app_name, limits)
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n"
    async with serve(app) as url:
        host, port = _address(url)
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        writer.write(head)
        stop = asyncio.Event()
        trickler = asyncio.create_task(_trickle(writer, b"b" * 40, stop))
        raw = await _read_all(reader, DEADLINE + 10.0)
        elapsed = time.monotonic() - started
        stop.set()
        await trickler
        writer.close()
        guard = getattr(app.ctx, GUARD_ATTRIBUTE)
        assert isinstance(guard, ConnectionGuard)
        assert guard.deadlines_hit == 1
    status, body = _status_and_body(raw)
    assert status == 408
    assert "error" in body
    # Closed soon after the 408: the rest of the body was not read for as long as it came.
    assert elapsed < DEADLINE + 3.0


@pytest.mark.parametrize(
    "head",
    [
        b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n",  # 404
        b"PUT /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n",  # 405
    ],
    ids=["not-found", "method-not-allowed"],
)
async def test_a_body_trickled_after_an_early_answer_is_cut_at_the_deadline(
    app_name: str, head: bytes
) -> None:
    """An error answered before the body is read (no such route, wrong method) leaves Sanic
    draining the rest of the body between requests, where its idle keep-alive timer is reset by
    every byte: the request's deadline still bounds that drain."""
    limits = HttpLimits(request_timeout=30.0, keep_alive_timeout=5.0, request_deadline=DEADLINE)
    app = make_app(app_name, limits)
    async with serve(app) as url:
        host, port = _address(url)
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        writer.write(head)
        stop = asyncio.Event()
        trickler = asyncio.create_task(_trickle(writer, b"b" * 40, stop))
        raw = await _read_all(reader, DEADLINE + 10.0)
        elapsed = time.monotonic() - started
        stop.set()
        sent = await trickler
        writer.close()
        guard = getattr(app.ctx, GUARD_ATTRIBUTE)
        assert isinstance(guard, ConnectionGuard)
        assert guard.deadlines_hit == 1
    assert raw.split(b" ", 2)[1] in (b"404", b"405"), raw
    assert elapsed < DEADLINE + 3.0, elapsed
    assert sent <= DEADLINE / TRICKLE_SECONDS + 3


async def test_a_request_within_the_deadline_and_keep_alive_are_served(app_name: str) -> None:
    limits = HttpLimits(request_deadline=DEADLINE, keep_alive_timeout=10.0)
    async with serve(make_app(app_name, limits)) as url:
        host, port = _address(url)
        reader, writer = await asyncio.open_connection(host, port)
        # A slow but complete request: 2 bytes a second apart, well within the deadline.
        writer.write(b"GET /ok HTTP/1.1\r\n")
        await asyncio.sleep(1.0)
        writer.write(b"Host: t\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 5.0)
        # The same connection: the second request starts before the first one's deadline and
        # ends after it, within its own (each request has its own clock).
        await asyncio.sleep(0.5)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\n")
        await asyncio.sleep(1.5)
        writer.write(b"Connection: close\r\n\r\n")
        second = await _read_all(reader, 5.0)
        writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert _status_and_body(second) == (200, {"ok": True})


async def test_one_client_over_its_cap_is_refused_another_is_served(app_name: str) -> None:
    cap = 3
    limits = HttpLimits(max_connections_per_client=cap, keep_alive_timeout=30.0)
    app = make_app(app_name, limits)
    async with serve(app) as url:
        host, port = _address(url)
        held = [await asyncio.open_connection(host, port) for _ in range(cap)]
        await asyncio.sleep(0.2)  # all accepted by the server
        reader, writer = await asyncio.open_connection(host, port)
        refused = await _read_all(reader, 5.0)
        writer.close()
        # Another client (another loopback address) is still served.
        other = await _get(host, port, source="127.0.0.2")
        # One of the first client's connections ends: it may connect again.
        _, first_writer = held.pop()
        first_writer.close()
        await first_writer.wait_closed()
        await asyncio.sleep(0.2)
        again = await _get(host, port)
        guard = getattr(app.ctx, GUARD_ATTRIBUTE)
        assert isinstance(guard, ConnectionGuard)
        refused_count = guard.refused
        for _, held_writer in held:
            held_writer.close()
    status, body = _status_and_body(refused)
    assert status == 503
    assert body == {"error": "too many connections from this client (at most 3); retry later"}
    assert b"connection: close" in refused.lower()
    assert other == (200, {"ok": True})
    assert again == (200, {"ok": True})
    assert refused_count == 1


def test_refusals_are_counted_and_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    guard = ConnectionGuard(HttpLimits(max_connections_per_client=1), clock=lambda: now[0])
    assert guard.admit("192.0.2.1")
    with caplog.at_level(logging.WARNING, logger="tdx_service_kit"):
        for _ in range(5):
            assert not guard.admit("192.0.2.1")
        now[0] += 11.0
        assert not guard.admit("192.0.2.1")
    assert guard.admit("192.0.2.2")
    records = [r for r in caplog.records if r.getMessage().startswith("connections refused")]
    assert [r.__dict__["refused"] for r in records] == [1, 5]
    assert guard.refused == 6
    guard.release("192.0.2.1")
    assert guard.held("192.0.2.1") == 0
    assert guard.admit("192.0.2.1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"request_deadline": 0},
        {"request_deadline": -1.0},
        {"request_deadline": 3601.0},
        {"max_connections_per_client": 0},
    ],
)
def test_connection_limits_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HttpLimits(**kwargs)
