"""The HTTP status table: the one place where the service's and the libraries' errors become
HTTP statuses (API.md). The errors themselves are drawn in `exceptions`.

| error | status |
| --- | --- |
| InvalidRequest, report-data EncodingError, lifecycle StepOutOfOrder, WorkloadRejected | 400 |
| SignatureError, SmallOrderKeyError, OwnerTokenInvalid, NotPermitted, WorkloadAuthError | 401 |
| StaleRequest (a WorkloadAuthError: a signed body's seq not above the last accepted) | 401 |
| RegistryRejected with registry status 403 (the instance is bound to other data there) | 403 |
| RegistryRejected with any other 4xx (it did not accept the attestation or identities) | 401 |
| RegistryUnavailable (unreachable, timeout, 5xx, 429) | 502 |
| QuoteSourceError, WorkloadUnavailable, RtmrDeviceError (RTMR3 cannot be read or extended) | 503 |
| WorkloadLocked (the key broker has not released the store key) | 503 |
| ComparisonPending, IdentityDisagreement (steps wait for the registry comparison) | 503 |
| EventLogFull (another configure would grow the event log past its budget) | 409 |
| StateWriteError, WorkloadFailed, MeasurementPersistError, MeasurementStateError | 500 |

The comparison's 503 carries a `Retry-After` header. 5xx reasons are logged. Nothing is
committed to the state file when any of these is raised, except after a configure or expose
whose runtime step, RTMR3 event and commit succeeded and whose re-registration then failed: the
registry's error is answered and the workload state is kept (the measurement cannot be taken
back; see `service`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from tdx_identity.exceptions import (
    EventLogFull,
    IdentitiesUnconfirmed,
    InvalidRequest,
    MeasurementPersistError,
    MeasurementStateError,
    NotPermitted,
    OwnerTokenInvalid,
    QuoteSourceError,
    RegistryRejected,
    RegistryUnavailable,
    RtmrDeviceError,
    StateWriteError,
    StepOutOfOrder,
    TransitionRefused,
    WorkloadAuthError,
    WorkloadFailed,
    WorkloadLocked,
    WorkloadRejected,
    WorkloadUnavailable,
)
from tdx_report_data import EncodingError, SignatureError, SmallOrderKeyError
from tdx_service_kit import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    ServiceUnavailable,
    Unauthorized,
    UpstreamError,
    error_response,
)

__all__ = ["MAPPED_ERRORS", "InternalError", "install_status_table", "to_api_error"]

log = logging.getLogger("tdx_identity.errors")


class InternalError(ApiError):
    """The service itself failed (500); the reason is logged, not sent."""

    status = 500


MAPPED_ERRORS: tuple[type[Exception], ...] = (
    IdentitiesUnconfirmed,
    InvalidRequest,
    EncodingError,
    SignatureError,
    TransitionRefused,
    OwnerTokenInvalid,
    WorkloadAuthError,
    WorkloadRejected,
    WorkloadUnavailable,
    WorkloadLocked,
    WorkloadFailed,
    RegistryRejected,
    RegistryUnavailable,
    QuoteSourceError,
    StateWriteError,
    RtmrDeviceError,
    MeasurementPersistError,
    MeasurementStateError,
    EventLogFull,
)


def to_api_error(exc: Exception) -> ApiError:
    """The ApiError (status and client-safe message) for one of MAPPED_ERRORS."""
    match exc:
        case InvalidRequest() | EncodingError() | StepOutOfOrder() | WorkloadRejected():
            return BadRequest(str(exc))
        case SmallOrderKeyError():
            return Unauthorized(f"bad key: {exc}")
        case SignatureError():
            return Unauthorized(f"signature does not verify: {exc}")
        case NotPermitted() | OwnerTokenInvalid() | WorkloadAuthError():
            return Unauthorized(str(exc))
        case RegistryRejected(status=403):
            return Forbidden(f"registry refused the registration: {exc.reason}")
        case RegistryRejected():
            return Unauthorized(f"registry refused the registration: {exc.reason}")
        case RegistryUnavailable():
            return UpstreamError(f"registry unavailable: {exc}")
        case QuoteSourceError():
            return ServiceUnavailable(f"attestation quote unavailable: {exc}")
        case WorkloadUnavailable():
            return ServiceUnavailable(str(exc))
        case WorkloadLocked():
            return ServiceUnavailable(f"workload locked: {exc}")
        case IdentitiesUnconfirmed():
            return ServiceUnavailable(exc.reason)
        case RtmrDeviceError():
            return ServiceUnavailable(f"RTMR3 unavailable: {exc}")
        case EventLogFull():
            return Conflict(str(exc))
        case MeasurementPersistError() | MeasurementStateError():
            return InternalError("runtime measurement failed")
        case WorkloadFailed():
            return InternalError("workload runtime failed")
        case StateWriteError():
            return InternalError("could not persist the new state")
    return InternalError("internal error")


def _handle(request: Request, exc: Exception) -> HTTPResponse:
    api_error = to_api_error(exc)
    if api_error.status >= 500 and not isinstance(exc, IdentitiesUnconfirmed):
        log.error(
            "request failed",
            extra={"path": request.path, "status": api_error.status, "reason": str(exc)},
        )
    elif api_error.status in (401, 403) and isinstance(exc, RegistryRejected):
        log.warning("registry refused a registration", extra={"reason": exc.reason})
    response = error_response(request, api_error)
    if isinstance(exc, IdentitiesUnconfirmed):
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def install_status_table(app: Sanic[Any, Any]) -> None:
    """Answer each of MAPPED_ERRORS with its status; call after `install_common`."""
    for exc_type in MAPPED_ERRORS:
        app.error_handler.add(exc_type, _handle)
