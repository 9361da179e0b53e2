"""Registry of attested TDX instances: POST /register, GET /instance/{pubkey} (API.md)."""

from .app import create_app
from .read_cache import ReadCache
from .records import InstanceRecord, Verdict
from .registration import (
    EVENT_LOG_HISTORY_LIMIT,
    BindingError,
    EventLogRequired,
    IdentityEventMismatch,
    Registrar,
    RegistrationConflict,
    RegistrationError,
    RegistrationRequest,
    RegressionRefused,
    merge_registration,
    parse_registration,
    policy_needs_event_log,
)
from .settings import INTEL_PCS_URL, Settings, SettingsError, parse_settings
from .store import DatabaseTarget, PonyRecordStore, RecordStore, StoreError
from .verification import (
    CheckedQuote,
    DcapQuoteVerifier,
    QuoteVerifier,
    UnsafeParseOnlyVerifier,
)

__all__ = [
    "EVENT_LOG_HISTORY_LIMIT",
    "INTEL_PCS_URL",
    "BindingError",
    "CheckedQuote",
    "DatabaseTarget",
    "DcapQuoteVerifier",
    "EventLogRequired",
    "IdentityEventMismatch",
    "InstanceRecord",
    "PonyRecordStore",
    "QuoteVerifier",
    "ReadCache",
    "RecordStore",
    "Registrar",
    "RegistrationConflict",
    "RegistrationError",
    "RegistrationRequest",
    "RegressionRefused",
    "Settings",
    "SettingsError",
    "StoreError",
    "UnsafeParseOnlyVerifier",
    "Verdict",
    "create_app",
    "merge_registration",
    "parse_registration",
    "parse_settings",
    "policy_needs_event_log",
]
