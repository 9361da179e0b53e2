"""Helpers for tests, benchmarks and the demo, never for production code: serve an app inside
the running event loop, start an installed program and wait until it answers, run a
throwaway PostgreSQL cluster, or make a certificate of an X.509 version cryptography refuses."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sanic import Sanic

from ._connections import GuardedHttpProtocol
from ._postgres import PostgresCluster, PostgresUnavailable, throwaway_postgres
from ._programs import (
    ExitedEarly,
    IgnoredStop,
    LaunchError,
    NotInstalled,
    NotReady,
    Program,
    answers,
    free_port,
    installed_program,
    running,
)
from ._tls_server import CountingTlsServer

__all__ = [
    "CountingTlsServer",
    "ExitedEarly",
    "IgnoredStop",
    "LaunchError",
    "NotInstalled",
    "NotReady",
    "PostgresCluster",
    "PostgresUnavailable",
    "Program",
    "answers",
    "free_port",
    "installed_program",
    "running",
    "serve",
    "throwaway_postgres",
    "with_x509_version",
]

_V3_VERSION = b"\xa0\x03\x02\x01\x02"
"""A DER TBSCertificate's version field for v3: [0] EXPLICIT INTEGER 2."""


def with_x509_version(certificate: bytes, version: int) -> bytes:
    """`certificate` (a v3 certificate, DER or PEM; the same form back) with its version
    INTEGER set to `version` (0-255). cryptography refuses a version other than 0 or 2 with
    `x509.InvalidVersion`, which is not a ValueError."""
    pem = certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    der = base64.b64decode(b"".join(certificate.splitlines()[1:-1])) if pem else certificate
    at = der.find(_V3_VERSION, 0, 16)
    if at < 0 or not 0 <= version <= 255:
        raise ValueError("not a v3 certificate, or a version outside 0-255")
    changed = der[: at + 4] + bytes([version]) + der[at + 5 :]
    if not pem:
        return changed
    body = base64.encodebytes(changed)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@asynccontextmanager
async def serve(app: Sanic[Any, Any], *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Start `app` with its listeners on a free port; yield its base URL; stop it on exit.

    Sets `Sanic.test_mode`, which lets one process start several apps (Sanic rewrites its own
    request methods on first start otherwise).
    """
    Sanic.test_mode = True
    app.config.MOTD = False
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = await app.create_server(
        sock=sock, protocol=GuardedHttpProtocol, return_asyncio_server=True, access_log=False
    )
    if server is None:
        raise RuntimeError("Sanic did not return a server")
    await server.startup()  # type: ignore[no-untyped-call]
    await server.before_start()  # type: ignore[no-untyped-call]
    await server.after_start()  # type: ignore[no-untyped-call]
    try:
        yield f"http://{host}:{port}"
    finally:
        await server.before_stop()  # type: ignore[no-untyped-call]
        await server.close()  # type: ignore[no-untyped-call]
        await server.after_stop()  # type: ignore[no-untyped-call]
