"""The API error hierarchy: raise one of these anywhere in a handler to answer `{"error": ...}`."""

from __future__ import annotations


class ApiError(Exception):
    """An error whose message is safe to show the client, answered with `status`."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """The request is malformed (400)."""

    status = 400


class Unauthorized(ApiError):
    """A signature, token or key does not check out (401)."""

    status = 401


class Forbidden(ApiError):
    """A change to something that is fixed once set (403)."""

    status = 403


class NotFound(ApiError):
    """No such thing (404)."""

    status = 404


class Conflict(ApiError):
    """The request is valid but cannot be carried out in the current state (409)."""

    status = 409


class PayloadTooLarge(ApiError):
    """Body larger than the configured limit (413)."""

    status = 413


class TooManyRequests(ApiError):
    """Rate limit reached (429); `retry_after` seconds go into the `Retry-After` header."""

    status = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(ApiError):
    """The service cannot answer right now (503)."""

    status = 503


class UpstreamError(ApiError):
    """A service this one depends on failed or answered nonsense (502)."""

    status = 502
