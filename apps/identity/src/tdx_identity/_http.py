"""Per-call httpx clients for one remote that share one TLS context."""

from __future__ import annotations

import ssl

import httpx


class HttpClients:
    """Builds a fresh `httpx.AsyncClient` per call (no event-loop ties, nothing to close at
    shutdown) while building the default verifying TLS context only once: loading the CA
    bundle costs about 20 ms, which every registration and RTMR extension would pay again."""

    def __init__(self, *, timeout: float, transport: httpx.AsyncBaseTransport | None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._tls: ssl.SSLContext | None = None

    def client(self) -> httpx.AsyncClient:
        if self._transport is not None:
            return httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return httpx.AsyncClient(timeout=self._timeout, verify=self._tls)
