"""install_common over real HTTP: every error is JSON with the right status."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from tdx_service_kit import (
    BadRequest,
    Forbidden,
    HttpLimits,
    NotFound,
    RateLimit,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UpstreamError,
    install_common,
    json_body,
    require_hex,
)
from tdx_service_kit.testing import serve

SECRET = "s3cr3t-detail-that-must-not-leak"


def make_app(
    name: str, *, limits: HttpLimits | None = None, rate: RateLimit | None = None
) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name)
    install_common(app, limits=limits or HttpLimits(max_body_bytes=1024), rate_limit=rate)

    @app.post("/echo")
    async def echo(request: Request) -> HTTPResponse:
        body = json_body(request)
        key = require_hex(body, "key", length=4)
        return json({"key": key.hex()})

    @app.get("/crash")
    async def crash(request: Request) -> HTTPResponse:
        raise RuntimeError(SECRET)

    @app.get("/raise/<status:int>")
    async def raise_status(request: Request, status: int) -> HTTPResponse:
        errors = {
            400: BadRequest,
            401: Unauthorized,
            403: Forbidden,
            404: NotFound,
            502: UpstreamError,
            503: ServiceUnavailable,
        }
        raise errors[status](f"reason {status}")

    @app.get("/slow")
    async def slow(request: Request) -> HTTPResponse:
        await asyncio.sleep(5)
        return json({})

    @app.get("/ok")
    async def ok(request: Request) -> HTTPResponse:
        return json({"ok": True})

    return app


async def test_body_too_large_is_413_json(app_name: str) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/echo", content=b"x" * 2048)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


async def test_chunked_body_too_large_is_413_json(app_name: str) -> None:
    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit must hold while streaming
        for _ in range(8):
            yield b"y" * 512

    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/echo", content=chunks())
    assert response.status_code == 413
    assert "error" in response.json()


async def test_body_within_limit_is_accepted(app_name: str) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/echo", json={"key": "A1b2c3d4", "pad": "z" * 800})
    assert response.status_code == 200
    assert response.json() == {"key": "a1b2c3d4"}


async def test_rate_limit_gives_429_with_retry_after(app_name: str) -> None:
    app = make_app(app_name, rate=RateLimit(per_second=0.25, burst=3))
    async with serve(app) as url, httpx.AsyncClient() as client:
        statuses = [(await client.get(f"{url}/ok")).status_code for _ in range(3)]
        limited = await client.get(f"{url}/ok")
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate limit reached, retry later"}
    assert limited.headers["Retry-After"] == "4"


async def test_rate_limit_also_counts_unknown_routes(app_name: str) -> None:
    app = make_app(app_name, rate=RateLimit(per_second=0.1, burst=1))
    async with serve(app) as url, httpx.AsyncClient() as client:
        first = await client.get(f"{url}/nope")
        second = await client.get(f"{url}/nope")
    assert first.status_code == 404
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1


async def test_unknown_route_is_404_json(app_name: str) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/no/such/route")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


async def test_wrong_method_is_405_json(app_name: str) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/echo")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"", "empty"),
        (b'{"key": "aa", "key": "bb"}', "duplicate key"),
        (b'{"key": NaN}', "NaN"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"other": 1}', "'key' is missing"),
        (b'{"key": 12}', "'key' must be a hex string"),
        (b'{"key": "zz112233"}', "'key' is not valid hex"),
        (b'{"key": "aabbcc"}', "'key' must be 4 bytes"),
        (b'{"key": "aa bbccdd"}', "'key' is not valid hex"),
    ],
)
async def test_bad_body_is_400_json_naming_the_problem(
    app_name: str, body: bytes, fragment: str
) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/echo", content=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


async def test_handler_crash_is_500_without_details_and_logged(
    app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tdx_service_kit")
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/crash")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert SECRET not in response.text
    logged = [r for r in caplog.records if r.name == "tdx_service_kit" and r.exc_info]
    assert logged and logged[0].exc_info is not None
    assert SECRET in str(logged[0].exc_info[1])


@pytest.mark.parametrize("status", [400, 401, 403, 404, 502, 503])
async def test_api_errors_answer_their_status_and_reason(app_name: str, status: int) -> None:
    async with serve(make_app(app_name)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/raise/{status}")
    assert response.status_code == status
    assert response.json() == {"error": f"reason {status}"}


async def test_request_timeout_is_408_json(app_name: str) -> None:
    app = make_app(app_name, limits=HttpLimits(request_timeout=0.3))
    async with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b'"error"' in body


async def test_response_timeout_is_503_json(app_name: str) -> None:
    app = make_app(app_name, limits=HttpLimits(response_timeout=0.3))
    async with serve(app) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/slow")
    assert response.status_code == 503
    assert set(response.json()) == {"error"}


def test_too_many_requests_retry_after_is_at_least_one() -> None:
    assert TooManyRequests("x", retry_after=0).retry_after == 1


async def test_one_access_line_per_request_when_info_is_enabled(
    app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tdx_service_kit.access")
    async with serve(make_app(app_name)) as url, httpx.AsyncClient(base_url=url) as client:
        await client.get("/ok")
        await client.get("/raise/404")
    lines = [r for r in caplog.records if r.name == "tdx_service_kit.access"]
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/ok", 200),
        ("GET", "/raise/404", 404),
    ]
    assert all(r.ms is not None and r.ms >= 0 for r in lines)  # type: ignore[attr-defined]
    assert all(r.client == "127.0.0.1" for r in lines)  # type: ignore[attr-defined]


async def test_no_access_work_when_info_is_filtered_out(
    app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tdx_service_kit.access")
    app = make_app(app_name)
    stamped: list[bool] = []

    @app.get("/stamped")
    async def was_stamped(request: Request) -> HTTPResponse:
        stamped.append(hasattr(request.ctx, "started"))
        return json({})

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/stamped")).status_code == 200
    assert stamped == [False]
    assert not [r for r in caplog.records if r.name == "tdx_service_kit.access"]
