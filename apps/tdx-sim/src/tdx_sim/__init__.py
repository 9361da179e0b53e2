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
)

__all__ = [
    "DEFAULT_MR_TD",
    "TCB_STATUSES",
    "PkiError",
    "SimCollateral",
    "SimOptions",
    "SimOptionsError",
    "SimPki",
    "SimPlatform",
    "SimSettings",
    "create_app",
    "load_or_create_pki",
]
