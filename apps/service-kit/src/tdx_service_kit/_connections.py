"""Connection-level limits Sanic has no setting for: a total deadline per request and a cap of
concurrent connections per client IP.

Sanic's ``REQUEST_TIMEOUT`` is an idle timer: every byte received resets it, so a client
trickling one byte every few seconds holds a connection (and a file descriptor) for as long as
it likes, and the body is read under ``RESPONSE_TIMEOUT``, reset the same way. `GuardedHttpProtocol`
adds a total deadline: the head and the body of a request must have arrived within
``request_deadline`` seconds of the request's first byte, whatever the pace; past it the
request is answered 408 with a JSON reason and the connection closed. It also refuses, at
accept, a connection from a client IP that already holds ``max_connections_per_client``:
503 with a JSON reason, then close, counted and logged at most once per `REFUSAL_LOG_SECONDS`.

The protocol reads its `ConnectionGuard` from the app (`install_common` puts it there); an app
without one is served exactly as by Sanic's own `HttpProtocol`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

from .config import HttpLimits

log = logging.getLogger("tdx_service_kit")

GUARD_ATTRIBUTE: Final = "tdx_connection_guard"
REFUSAL_LOG_SECONDS: Final = 10.0
CLOSE_GRACE_SECONDS: Final = 2.0  # to write the 408 before the connection is cut regardless
UNKNOWN_CLIENT: Final = "unknown"


def _refusal_response(limit: int) -> bytes:
    body = json.dumps(
        {"error": f"too many connections from this client (at most {limit}); retry later"}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    return head + body


class ConnectionGuard:
    """Counts the open connections of each client IP for one app (never module-global)."""

    def __init__(self, limits: HttpLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.request_deadline = limits.request_deadline
        self.max_per_client = limits.max_connections_per_client
        self.refusal = _refusal_response(limits.max_connections_per_client)
        self._clock = clock
        self._open: dict[str, int] = {}
        self.refused = 0
        self.deadlines_hit = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def admit(self, client: str) -> bool:
        """Count a new connection of `client`; False (and counted as refused) over the cap."""
        held = self._open.get(client, 0)
        if held >= self.max_per_client:
            self.refused += 1
            self._unlogged += 1
            now = self._clock()
            if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_SECONDS:
                log.warning(
                    "connections refused: per-client cap reached",
                    extra={
                        "client": client,
                        "limit": self.max_per_client,
                        "refused": self._unlogged,
                        "refused_total": self.refused,
                    },
                )
                self._logged_at = now
                self._unlogged = 0
            return False
        self._open[client] = held + 1
        return True

    def release(self, client: str) -> None:
        """Forget one connection of `client` (each admitted connection is released once)."""
        held = self._open.get(client, 0)
        if held <= 1:
            self._open.pop(client, None)
        else:
            self._open[client] = held - 1

    def held(self, client: str) -> int:
        return self._open.get(client, 0)


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return UNKNOWN_CLIENT  # a Unix socket: every client is one


class GuardedHttpProtocol(HttpProtocol):
    """Sanic's HTTP/1.1 protocol with the per-client cap and the total request deadline."""

    __slots__ = ("_admitted", "_began", "_client", "_deadline_handle", "_guard")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        guard = getattr(self.app.ctx, GUARD_ATTRIBUTE, None)
        self._guard: ConnectionGuard | None = guard if isinstance(guard, ConnectionGuard) else None
        self._client = UNKNOWN_CLIENT
        self._admitted = False
        self._began: float | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard is not None:
            self._client = _client_of(transport)
            if not guard.admit(self._client):
                # Never handed to Sanic: no task, not in the server's connections.
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(guard.refusal)
                transport.close()
                return
            self._admitted = True
        super().connection_made(transport)  # type: ignore[no-untyped-call]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is None:
            super().connection_lost(exc)  # type: ignore[no-untyped-call]
            return
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release(self._client)
        self._stop_clock()
        super().connection_lost(exc)  # type: ignore[no-untyped-call]

    def data_received(self, data: bytes) -> None:
        guard = self._guard
        if guard is not None and data and self._http_stage_idle_or_unset():
            # The first byte of a request (the connection is between requests, or this is its
            # first request): its head and body must arrive within the deadline.
            self._stop_clock()
            self._began = self.loop.time()
            self._deadline_handle = self.loop.call_at(
                self._began + guard.request_deadline, self._deadline_reached
            )
        super().data_received(data)

    def close(self, timeout: float | None = None) -> None:
        self._stop_clock()
        super().close(timeout=timeout)

    def _http_stage_idle_or_unset(self) -> bool:
        """Whether received bytes begin a new request: between requests, and not the rest of
        a body Sanic drains after an answer sent before the body was read (a 404, a 405),
        which is still the request the clock is running for."""
        http = self.http
        if self._began is None or http is None:
            return True
        return http.stage is Stage.IDLE and not http.request_body

    def _stop_clock(self) -> None:
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        self._began = None

    def _deadline_reached(self) -> None:
        self._deadline_handle = None
        self._began = None
        http = self.http
        task = self._task
        if http is None or task is None or self._guard is None:
            return
        receiving = http.stage is Stage.REQUEST or (
            http.stage in (Stage.HANDLER, Stage.IDLE) and bool(http.request_body)
        )
        if not receiving:
            return  # received in time; the handler runs under the response timeout
        if http.stage is Stage.IDLE:
            # Answered already (before its body was read); Sanic is draining the rest of the
            # body, its keep-alive timer reset by every byte: close instead of reading on.
            self._guard.deadlines_hit += 1
            log.info(
                "request deadline reached while draining an answered request's body; closing",
                extra={"client": self._client, "deadline": self._guard.request_deadline},
            )
            http.keep_alive = False
            http.request_body = None
            task.cancel()
            self.loop.call_later(CLOSE_GRACE_SECONDS, self._cut)
            return
        self._guard.deadlines_hit += 1
        log.info(
            "request deadline reached; answering 408 and closing",
            extra={"client": self._client, "deadline": self._guard.request_deadline},
        )
        http.exception = RequestTimeout(
            f"the request was not received within {self._guard.request_deadline:g} seconds"
        )
        # No keep-alive, and no draining of the rest of the body after the 408 (Sanic would
        # otherwise read what the client still trickles, for as long as it trickles).
        http.keep_alive = False
        http.request_body = None
        if sys.version_info < (3, 14):
            task.cancel("request deadline")
        else:
            task.cancel()
        self.loop.call_later(CLOSE_GRACE_SECONDS, self._cut)

    def _cut(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
