"""Identity service of a TDX confidential VM: instance key, operator and owner, workload."""

from tdx_identity.app import create_app
from tdx_identity.exceptions import InvalidRequest, StartupError
from tdx_identity.lifecycle import Action, Lifecycle, NotPermitted, StepOutOfOrder, next_state
from tdx_identity.quotes import (
    ConfigfsTsmQuoteSource,
    MockTdxQuoteSource,
    NoQuoteSourceError,
    QuoteSource,
    QuoteSourceError,
    select_quote_source,
)
from tdx_identity.registry_client import (
    HttpRegistryClient,
    RegistrationRequest,
    RegistryClient,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
)
from tdx_identity.service import IdentityService
from tdx_identity.settings import Settings, parse_settings
from tdx_identity.state import PersistedState, StateStore
from tdx_identity.workload_api import (
    NotConfiguredWorkload,
    WorkloadConfig,
    WorkloadContext,
    WorkloadError,
    WorkloadFactory,
    WorkloadFailed,
    WorkloadManager,
    WorkloadRejected,
    WorkloadSectionStore,
    WorkloadUnavailable,
)

__all__ = [
    "Action",
    "ConfigfsTsmQuoteSource",
    "HttpRegistryClient",
    "IdentityService",
    "InvalidRequest",
    "Lifecycle",
    "MockTdxQuoteSource",
    "NoQuoteSourceError",
    "NotConfiguredWorkload",
    "NotPermitted",
    "PersistedState",
    "QuoteSource",
    "QuoteSourceError",
    "RegistrationRequest",
    "RegistryClient",
    "RegistryError",
    "RegistryRejected",
    "RegistryUnavailable",
    "Settings",
    "StartupError",
    "StateStore",
    "StepOutOfOrder",
    "WorkloadConfig",
    "WorkloadContext",
    "WorkloadError",
    "WorkloadFactory",
    "WorkloadFailed",
    "WorkloadManager",
    "WorkloadRejected",
    "WorkloadSectionStore",
    "WorkloadUnavailable",
    "create_app",
    "next_state",
    "parse_settings",
    "select_quote_source",
]
