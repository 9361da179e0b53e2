"""Identity service of a TDX confidential VM: instance key, operator and owner, workload.

The app exports `create_app`, its settings and `main`; the rest are the core's ports and
values, the adapters behind them and the exceptions, for tests and embedders.
"""

from collections.abc import Sequence

from tdx_identity.app import WorkloadFactory, create_app
from tdx_identity.core.lifecycle import Action, Lifecycle, WorkloadPhase, has_workload, next_state
from tdx_identity.core.ports import (
    CommittedWorkload,
    KeyProvider,
    QuoteSource,
    RegistrationRequest,
    RegistryClient,
    RtmrDevice,
    WorkloadManager,
    WorkloadSectionStore,
)
from tdx_identity.core.service import IdentityService
from tdx_identity.core.state import PersistedState, StateStore, WorkloadSection
from tdx_identity.exceptions import (
    IdentityServiceError,
    InvalidRequest,
    NoPlatformError,
    NoQuoteSourceError,
    NoRtmrDeviceError,
    NotPermitted,
    QuoteSourceError,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    StartupError,
    StepOutOfOrder,
    WorkloadError,
    WorkloadFailed,
    WorkloadRejected,
    WorkloadUnavailable,
)
from tdx_identity.platform import (
    ConfigfsTsmQuoteSource,
    MockTdxQuoteSource,
    Platform,
    PlatformSettings,
    SimRtmrDevice,
    SysfsRtmrDevice,
    select_platform,
)
from tdx_identity.registry_client import HttpRegistryClient
from tdx_identity.settings import Settings, parse_settings
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.manager import WorkloadSettings
from tdx_identity.workload.unavailable import NotConfiguredWorkload


def main(argv: Sequence[str] | None = None) -> int:
    """`identity-svc` (`tdx_identity.cli.main`), imported only when called: `python -m
    tdx_identity.cli` must not find the module already loaded."""
    from tdx_identity.cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "Action",
    "CommittedWorkload",
    "ConfigfsTsmQuoteSource",
    "HttpRegistryClient",
    "IdentityService",
    "IdentityServiceError",
    "InvalidRequest",
    "KeyProvider",
    "Lifecycle",
    "MockTdxQuoteSource",
    "NoPlatformError",
    "NoQuoteSourceError",
    "NoRtmrDeviceError",
    "NotConfiguredWorkload",
    "NotPermitted",
    "PersistedState",
    "Platform",
    "PlatformSettings",
    "QuoteSource",
    "QuoteSourceError",
    "RegistrationRequest",
    "RegistryClient",
    "RegistryError",
    "RegistryRejected",
    "RegistryUnavailable",
    "RtmrDevice",
    "Settings",
    "SimRtmrDevice",
    "StartupError",
    "StateStore",
    "StepOutOfOrder",
    "SysfsRtmrDevice",
    "WorkloadConfig",
    "WorkloadError",
    "WorkloadFactory",
    "WorkloadFailed",
    "WorkloadManager",
    "WorkloadPhase",
    "WorkloadRejected",
    "WorkloadSection",
    "WorkloadSectionStore",
    "WorkloadSettings",
    "WorkloadUnavailable",
    "create_app",
    "has_workload",
    "main",
    "next_state",
    "parse_settings",
    "select_platform",
]
