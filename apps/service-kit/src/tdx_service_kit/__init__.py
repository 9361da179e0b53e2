"""Shared Sanic plumbing of the TDX apps: JSON errors, limits, rate limits, logging, serving."""

from ._install import error_response, install_common
from ._logging import JsonFormatter, configure_logging
from ._ops import (
    OPS_PATHS,
    CheckFailed,
    CheckResult,
    OpenApiDocument,
    OpenApiDocumentError,
    Ops,
    OpsError,
    OpsMetrics,
    Readiness,
    ReadinessCheck,
    install_ops,
    ops_of,
)
from ._run import ListenError, run_app
from ._signals import StartupSignals
from .body import json_body, parse_hex, parse_json_object, require_hex
from .config import (
    DatabaseTarget,
    HttpLimits,
    RateLimit,
    add_connection_limit_flags,
    parse_bool,
    with_connection_limits,
)
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UpstreamError,
)

__all__ = [
    "OPS_PATHS",
    "ApiError",
    "BadRequest",
    "CheckFailed",
    "CheckResult",
    "Conflict",
    "DatabaseTarget",
    "Forbidden",
    "HttpLimits",
    "JsonFormatter",
    "ListenError",
    "NotFound",
    "OpenApiDocument",
    "OpenApiDocumentError",
    "Ops",
    "OpsError",
    "OpsMetrics",
    "PayloadTooLarge",
    "RateLimit",
    "Readiness",
    "ReadinessCheck",
    "ServiceUnavailable",
    "StartupSignals",
    "TooManyRequests",
    "Unauthorized",
    "UpstreamError",
    "add_connection_limit_flags",
    "configure_logging",
    "error_response",
    "install_common",
    "install_ops",
    "json_body",
    "ops_of",
    "parse_bool",
    "parse_hex",
    "parse_json_object",
    "require_hex",
    "run_app",
    "with_connection_limits",
]
