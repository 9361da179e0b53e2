"""Registry of attested TDX instances: POST /register, GET /instance/{pubkey} (API.md)."""

from .app import create_app
from .records import InstanceRecord, Verdict
from .registration import (
    BindingError,
    Registrar,
    RegistrationConflict,
    RegistrationError,
    RegistrationRequest,
    merge_registration,
    parse_registration,
)
from .settings import INTEL_PCS_URL, Settings, SettingsError, parse_settings
from .store import DatabaseTarget, PonyRecordStore, RecordStore, StoreError
from .verification import (
    CheckedQuote,
    DcapQuoteVerifier,
    ParseOnlyQuoteVerifier,
    QuoteVerifier,
)

__all__ = [
    "INTEL_PCS_URL",
    "BindingError",
    "CheckedQuote",
    "DatabaseTarget",
    "DcapQuoteVerifier",
    "InstanceRecord",
    "ParseOnlyQuoteVerifier",
    "PonyRecordStore",
    "QuoteVerifier",
    "RecordStore",
    "Registrar",
    "RegistrationConflict",
    "RegistrationError",
    "RegistrationRequest",
    "Settings",
    "SettingsError",
    "StoreError",
    "Verdict",
    "create_app",
    "merge_registration",
    "parse_registration",
    "parse_settings",
]
