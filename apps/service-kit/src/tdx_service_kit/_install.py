"""`install_common`: limits, timeouts, rate limiting, access lines and the one error handler."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.exceptions import ServiceUnavailable as SanicServiceUnavailable
from sanic.response import BaseHTTPResponse, HTTPResponse, json

from ._connections import GUARD_ATTRIBUTE, ConnectionGuard
from ._ratelimit import TokenBuckets
from .config import HttpLimits, RateLimit
from .errors import ApiError, TooManyRequests

log = logging.getLogger("tdx_service_kit")
access_log = logging.getLogger("tdx_service_kit.access")

INTERNAL_ERROR = "internal error"
RATE_LIMIT_EXEMPT_ATTRIBUTE = "tdx_rate_limit_exempt"
"""`app.ctx` attribute: the exact paths the rate limit does not count (`install_ops` sets it)."""


def error_response(request: Request, exc: Exception) -> HTTPResponse:
    """Turn any exception into `{"error": reason}` with its status; never leak internals."""
    if isinstance(exc, ApiError):
        response = json({"error": exc.message}, status=exc.status)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, SanicException) and (
        exc.status_code < 500 or isinstance(exc, SanicServiceUnavailable)
    ):
        status = exc.status_code
        reason = str(exc) or HTTPStatus(status).phrase
        response = json({"error": reason}, status=status)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"method": request.method, "path": request.path},
    )
    return json({"error": INTERNAL_ERROR}, status=500)


def install_common(
    app: Sanic[Any, Any], *, limits: HttpLimits, rate_limit: RateLimit | None
) -> None:
    """Apply body/timeouts limits, per-client-IP rate limiting and JSON errors to `app`.

    The total request deadline and the per-client connection cap are enforced by the protocol
    `run_app` and `testing.serve` use, from the `ConnectionGuard` put on `app.ctx` here.
    """
    app.config.REQUEST_MAX_SIZE = limits.max_body_bytes
    app.config.REQUEST_TIMEOUT = limits.request_timeout
    app.config.RESPONSE_TIMEOUT = limits.response_timeout
    app.config.KEEP_ALIVE_TIMEOUT = limits.keep_alive_timeout
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.ACCESS_LOG = False
    setattr(app.ctx, GUARD_ATTRIBUTE, ConnectionGuard(limits))

    buckets = TokenBuckets(rate_limit) if rate_limit is not None else None

    async def _start(request: Request) -> None:
        if access_log.isEnabledFor(logging.INFO):
            request.ctx.started = time.monotonic()
        if buckets is not None and request.path not in getattr(
            request.app.ctx, RATE_LIMIT_EXEMPT_ATTRIBUTE, ()
        ):
            wait = buckets.take(request.client_ip or "unknown")
            if wait:
                raise TooManyRequests("rate limit reached, retry later", retry_after=wait)

    async def _access(request: Request, response: BaseHTTPResponse) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        started = getattr(request.ctx, "started", None)
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round((time.monotonic() - started) * 1000, 2) if started else None,
                "client": request.client_ip,
            },
        )

    app.register_middleware(_start, "request", priority=1000)
    app.register_middleware(_access, "response", priority=-1000)
    app.error_handler.add(Exception, error_response)
