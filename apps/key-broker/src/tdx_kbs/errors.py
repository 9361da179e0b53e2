"""The one place where errors become HTTP answers: Trustee's error body
(`tdx_kbs_protocol.error_body`: `{"type": ERROR_TYPE_BASE + variant, "detail", "error"}`) with
Trustee's variant names and statuses (kbs/src/error.rs: 404 for a bad path or an unknown
plugin, 401 for every other refusal). Where we deviate, the table says so and the app README
says why.

| error | variant | status |
| --- | --- | --- |
| `KbsMessageError`, `MessageError` (bad body, refused JWK) | `SerdeError` | 400 (Trustee 401) |
| `SessionError` (no/expired session, spent nonce, version, TEE) | `AttestationError` | 401 |
| `EvidenceError` (nonce, binding, possession, DCAP, event log) | `AttestationError` | 401 |
| `CollateralUnavailable` (PCCS down) | `AttestationError` | 502 (Trustee 401) |
| `SessionsExhausted` (session table full) | `AttestationError` | 503, Retry-After |
| `TokenMissing` (no attested session, no bearer token) | `TokenNotFound` | 401 |
| `TokenError` (bearer token not ours or expired) | `TokenVerifierError` | 401 |
| `PolicyDenied` | `PolicyDeny` | 401 |
| `ResourcePathError`, `InvalidPath` | `InvalidRequestPath` | 404 |
| `ResourceNotFound` | `ResourceNotFound` | 404 (Trustee: `PluginInternalError` 401) |
| `UnknownEndpoint` | `PluginNotFound` | 404 |
| `AdminTokenError`, `AdminRefused` | `AdminAuthAccess` | 401 |
| `PolicyCompileError`, `PolicyUploadError` | `ParsePolicyError` | 400 (Trustee 401) |
| `BadUpload` (empty or oversized resource) | `PluginInternalError` | 400 (Trustee 401) |
| `JweError` (encryption to the TEE key failed) | `JweError` | 401 |
| `StoreError`, `SealError` | `StorageError` | 503 (Trustee 401) |
| Sanic's 4xx (too large, rate limit, wrong method) | `HttpError` | its status |
| anything else (a bug) | the service kit's `{"error": "internal error"}` | 500, logged |
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from tdx_kbs_protocol import (
    AdminTokenError,
    JweError,
    KbsProtocolError,
    MessageError,
    ResourcePathError,
    error_body,
)
from tdx_service_kit import ApiError, TooManyRequests

from .policy import PolicyCompileError, PolicyError
from .sealing import SealError, StorageKeyError
from .sessions import SessionError, SessionsExhausted
from .store import StoreError
from .tokens import TokenError
from .verification import CollateralUnavailable, EvidenceError

log = logging.getLogger("tdx_kbs.errors")


class BrokerError(Exception):
    """A refusal raised by the broker's routes; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KbsMessageError(BrokerError):
    """A request body that does not parse, or asks for what the broker does not speak."""


class TokenMissing(BrokerError):
    """A resource request with neither an attested session nor a bearer token."""


class PolicyDenied(BrokerError):
    """The resource policy does not allow this release."""


class InvalidPath(BrokerError):
    """A resource path that is not repository/type/tag."""


class ResourceNotFound(BrokerError):
    """The policy allows the path, but no resource is stored there."""


class UnknownEndpoint(BrokerError):
    """A /kbs/v0 path naming no endpoint (Trustee: no such plugin)."""


class AdminRefused(BrokerError):
    """An admin request without a usable bearer token."""


class PolicyUploadError(BrokerError):
    """A resource-policy body that is not `{"policy": <base64url Rego>}`."""


class BadUpload(BrokerError):
    """A resource upload with an empty body."""


INTERNAL_DETAIL = "internal error"


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else str(exc)


def classify(exc: Exception) -> tuple[str, int, str] | None:
    """(variant, status, detail) for one of our errors; None for anything else."""
    if isinstance(exc, ResourcePathError | InvalidPath):
        return "InvalidRequestPath", 404, f"Request path is invalid: {_reason(exc)}"
    if isinstance(exc, MessageError | KbsMessageError):
        return "SerdeError", 400, _reason(exc)
    if isinstance(exc, SessionsExhausted):
        return "AttestationError", 503, exc.reason
    if isinstance(exc, CollateralUnavailable):
        return "AttestationError", 502, exc.reason
    if isinstance(exc, SessionError | EvidenceError):
        return "AttestationError", 401, f"Attestation error: {exc.reason}"
    if isinstance(exc, TokenMissing):
        return "TokenNotFound", 401, f"Attestation Token not found: {exc.reason}"
    if isinstance(exc, TokenError):
        return "TokenVerifierError", 401, f"Token Verifier error: {exc.reason}"
    if isinstance(exc, PolicyDenied):
        return "PolicyDeny", 401, "Access denied by policy"
    if isinstance(exc, ResourceNotFound):
        return "ResourceNotFound", 404, exc.reason
    if isinstance(exc, UnknownEndpoint):
        return "PluginNotFound", 404, exc.reason
    if isinstance(exc, AdminTokenError | AdminRefused):
        return "AdminAuthAccess", 401, f"admin access denied: {_reason(exc)}"
    if isinstance(exc, PolicyCompileError | PolicyUploadError):
        return "ParsePolicyError", 400, f"Failed to parse policy: {_reason(exc)}"
    if isinstance(exc, BadUpload):
        return "PluginInternalError", 400, exc.reason
    if isinstance(exc, JweError):
        log.error("JWE encryption failed", extra={"reason": str(exc)})
        return "JweError", 401, "JWE failed"
    if isinstance(exc, StoreError | SealError | StorageKeyError):
        log.error("store failed", extra={"reason": str(exc)})
        return "StorageError", 503, "the store is unavailable; nothing was released or stored"
    return None


def error_response(request: Request, exc: Exception) -> HTTPResponse:
    """Any exception as Trustee's error body; internals are logged, never answered."""
    classified = classify(exc)
    headers: dict[str, str] = {}
    if classified is None and isinstance(exc, ApiError) and exc.status < 500:
        classified = ("HttpError", exc.status, exc.message)
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
    if classified is None and isinstance(exc, SanicException) and exc.status_code < 500:
        status = exc.status_code
        classified = ("HttpError", status, str(exc) or HTTPStatus(status).phrase)
        headers.update({str(k): str(v) for k, v in (exc.headers or {}).items()})
    if classified is None:
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"method": request.method, "path": request.path},
        )
        classified = ("InternalError", 500, INTERNAL_DETAIL)
    variant, status, detail = classified
    if status in (401, 404) or status >= 500:
        log.info(
            "request refused",
            extra={"variant": variant, "status": status, "path": request.path, "detail": detail},
        )
    if isinstance(exc, SessionsExhausted):
        headers["Retry-After"] = str(exc.retry_after)
    return json(error_body(variant, detail), status=status, headers=headers)


MAPPED_ERRORS: tuple[type[Exception], ...] = (
    BrokerError,
    KbsProtocolError,
    SessionError,
    EvidenceError,
    TokenError,
    PolicyError,
    StoreError,
    SealError,
    StorageKeyError,
    ApiError,
    SanicException,
)


def install_error_mapping(app: Sanic[Any, Any]) -> None:
    """Our errors, the service kit's and Sanic's through `error_response` (any other exception
    is a bug: the service kit's handler logs it and answers 500 without detail)."""
    for error_type in MAPPED_ERRORS:
        app.error_handler.add(error_type, error_response)
