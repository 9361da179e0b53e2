"""Registry of attested TDX instances: GET /challenge, POST /register, GET /instance/{pubkey}
(API.md), and the re-appraisal of stored quotes (`tdx-registry reappraise`)."""

from tdx_service_kit import DatabaseTarget

from .app import create_app
from .challenges import (
    Challenge,
    ChallengeRefused,
    Challenges,
    ChallengeSettings,
    ChallengesExhausted,
)
from .read_cache import ReadCache
from .reappraise import ReappraisalSummary, Reappraiser
from .records import VERDICT_HISTORY_LIMIT, InstanceRecord, PastVerdict, Verdict
from .registration import (
    EVENT_LOG_HISTORY_LIMIT,
    BindingError,
    EventLogRequired,
    IdentityEventMismatch,
    PossessionRefused,
    Registrar,
    RegistrationConflict,
    RegistrationError,
    RegistrationRequest,
    RegressionRefused,
    V1RegistrationRefused,
    merge_registration,
    parse_registration,
    policy_needs_event_log,
)
from .settings import INTEL_PCS_URL, Settings, SettingsError, parse_settings
from .store import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    PonyRecordStore,
    RecordStore,
    StoreBusy,
    StoreError,
)
from .verification import (
    CheckedQuote,
    DcapQuoteVerifier,
    QuoteVerifier,
    UnsafeParseOnlyVerifier,
)

__all__ = [
    "EVENT_LOG_HISTORY_LIMIT",
    "INTEL_PCS_URL",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "VERDICT_HISTORY_LIMIT",
    "BindingError",
    "Challenge",
    "ChallengeRefused",
    "ChallengeSettings",
    "Challenges",
    "ChallengesExhausted",
    "CheckedQuote",
    "DatabaseTarget",
    "DcapQuoteVerifier",
    "EventLogRequired",
    "IdentityEventMismatch",
    "InstanceRecord",
    "PastVerdict",
    "PonyRecordStore",
    "PossessionRefused",
    "QuoteVerifier",
    "ReadCache",
    "ReappraisalSummary",
    "Reappraiser",
    "RecordStore",
    "Registrar",
    "RegistrationConflict",
    "RegistrationError",
    "RegistrationRequest",
    "RegressionRefused",
    "Settings",
    "SettingsError",
    "StoreBusy",
    "StoreError",
    "UnsafeParseOnlyVerifier",
    "V1RegistrationRefused",
    "Verdict",
    "create_app",
    "merge_registration",
    "parse_registration",
    "parse_settings",
    "policy_needs_event_log",
]
