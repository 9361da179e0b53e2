"""The one place where library and registry errors become HTTP answers (statuses of API.md).

| error | status |
| --- | --- |
| malformed quote/PPID (`QuoteFormatError`, `QuoteParseError`, `PpidError`), `EncodingError` | 400 |
| malformed event log (`EventLogError`) | 400 |
| `SignatureError`, any other `VerificationError` (named step), `BindingError` | 401 |
| `ReplayMismatchError`, `PolicyViolationError`, `EventLogRequired`, `IdentityEventMismatch` | 401 |
| `ChallengeRefused`, `V1RegistrationRefused`, `PossessionRefused` | 401 |
| `CcelRefused` (no replay to RTMR0-2, a kernel or command-line pin refused, none given) | 401 |
| `RegistrationConflict` | 403 |
| `PccsError` (collateral could not be fetched) | 502 |
| `StoreBusy` (SQLite locked by another writer past the busy timeout) | 503, `Retry-After` |
| `StoreError` (database failed or stayed contended) | 503 |
| `ChallengesExhausted` (the cap of outstanding challenges) | 503 with `Retry-After` |
| `LogArgumentError`, `LogRangeError`, `MerkleArgumentError` (a /log/* query) | 400 |
"""

from __future__ import annotations

import logging
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from tdx_measure import EventLogError, MeasurementError, PolicyViolationError, ReplayMismatchError
from tdx_merkle import MerkleArgumentError
from tdx_ppid import PpidError
from tdx_quote import QuoteFormatError
from tdx_report_data import EncodingError, ReportDataError, SignatureError
from tdx_service_kit import (
    ApiError,
    BadRequest,
    Forbidden,
    ServiceUnavailable,
    Unauthorized,
    UpstreamError,
    error_response,
)
from tdx_verify import PccsError, QuoteParseError, VerificationError

from .ccel_check import CcelRefused
from .challenges import ChallengeRefused, ChallengesExhausted
from .log_store import LogRangeError
from .registration import (
    BindingError,
    EventLogRequired,
    IdentityEventMismatch,
    PossessionRefused,
    RegistrationConflict,
    RegistrationError,
    V1RegistrationRefused,
)
from .routes.log import LogArgumentError
from .store import StoreBusy, StoreError

log = logging.getLogger("tdx_registry.errors")

MAPPED_ERRORS: tuple[type[Exception], ...] = (
    QuoteFormatError,
    PpidError,
    ReportDataError,
    MeasurementError,
    VerificationError,
    PccsError,
    RegistrationError,
    StoreError,
    ChallengeRefused,
    ChallengesExhausted,
    CcelRefused,
    LogArgumentError,
    LogRangeError,
    MerkleArgumentError,
)


def api_error_for(exc: Exception) -> ApiError | None:
    """The HTTP error for a library or registry error; None if `exc` is not one of ours."""
    if isinstance(exc, QuoteFormatError):
        return BadRequest(f"attestation_quote is not a valid TDX quote: {exc}")
    if isinstance(exc, QuoteParseError):
        return BadRequest(f"attestation_quote is not a valid TDX quote: {exc.reason}")
    if isinstance(exc, PpidError):
        return BadRequest(f"the quote carries no usable PPID: {exc}")
    if isinstance(exc, EncodingError):
        return BadRequest(f"the request cannot be bound to a quote: {exc}")
    if isinstance(exc, EventLogError):
        return BadRequest(f"field 'event_log' is not a valid event log: {exc.reason}")
    if isinstance(exc, ReplayMismatchError):
        return Unauthorized(f"event log does not replay to the quote's RTMR3: {exc.reason}")
    if isinstance(exc, PolicyViolationError):
        return Unauthorized(f"event log refused by the measurement policy: {exc.reason}")
    if isinstance(exc, SignatureError):
        return Unauthorized(f"identity signature check failed: {exc}")
    if isinstance(exc, VerificationError):
        return Unauthorized(f"quote verification failed at {exc.step}: {exc.reason}")
    if isinstance(exc, CcelRefused):
        return Unauthorized(exc.reason)
    if isinstance(exc, PccsError):
        log.warning("PCCS fetch failed", extra={"reason": str(exc)})
        return UpstreamError(f"could not fetch collateral from the PCCS: {exc}")
    if isinstance(
        exc,
        BindingError
        | EventLogRequired
        | IdentityEventMismatch
        | V1RegistrationRefused
        | PossessionRefused
        | ChallengeRefused,
    ):
        return Unauthorized(exc.reason)
    if isinstance(exc, ChallengesExhausted):
        return ServiceUnavailable(
            "too many outstanding challenges: retry after the Retry-After seconds"
        )
    if isinstance(exc, RegistrationConflict):
        return Forbidden(exc.reason)
    if isinstance(exc, StoreBusy):
        log.warning("record store busy", extra={"reason": str(exc)})
        return ServiceUnavailable(
            "the database stayed locked by another writer, nothing was stored: retry after "
            "the Retry-After seconds"
        )
    if isinstance(exc, StoreError):
        log.error("record store failed", exc_info=exc)
        return ServiceUnavailable("the record store is unavailable, nothing was stored")
    if isinstance(exc, LogArgumentError | LogRangeError):
        return BadRequest(exc.reason)
    if isinstance(exc, MerkleArgumentError):
        return BadRequest(f"bad log query: {exc}")
    if isinstance(exc, ReportDataError | RegistrationError):
        return BadRequest(str(exc))
    return None


def _handle(request: Request, exc: Exception) -> HTTPResponse:
    mapped = api_error_for(exc)
    response = error_response(request, mapped if mapped is not None else exc)
    if isinstance(exc, ChallengesExhausted):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, StoreBusy):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install_error_mapping(app: Sanic[Any, Any]) -> None:
    """Route our error types through `api_error_for`, then the service kit's JSON answer."""
    for error_type in MAPPED_ERRORS:
        app.error_handler.add(error_type, _handle)
