"""A simulated Intel TDX platform and PCCS v4, for development and tests only."""

from .app import SimSettings, create_app
from .pki import PkiError, SimPki, load_or_create_pki
from .platform import (
    DEFAULT_MR_TD,
    TCB_STATUSES,
    SimCollateral,
    SimOptions,
    SimOptionsError,
    SimPlatform,
    TcbRecovery,
    TcbRecoveryError,
)
from .rtmr import (
    BOOT_RTMRS,
    EXTENDABLE_RTMRS,
    RtmrDigestError,
    RtmrError,
    RtmrNotExtendableError,
    SimRtmrs,
    td_image_allowlists,
)

__all__ = [
    "BOOT_RTMRS",
    "DEFAULT_MR_TD",
    "EXTENDABLE_RTMRS",
    "TCB_STATUSES",
    "PkiError",
    "RtmrDigestError",
    "RtmrError",
    "RtmrNotExtendableError",
    "SimCollateral",
    "SimOptions",
    "SimOptionsError",
    "SimPki",
    "SimPlatform",
    "SimRtmrs",
    "SimSettings",
    "TcbRecovery",
    "TcbRecoveryError",
    "create_app",
    "load_or_create_pki",
    "td_image_allowlists",
]
