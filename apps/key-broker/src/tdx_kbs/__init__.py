"""The owner's key broker, tdx-kbs: Trustee's KBS protocol (RCAR 0.4.0) for TDX, releasing
resources to TDs whose fresh evidence verifies and satisfies a Rego resource policy."""

from tdx_service_kit import DatabaseTarget

from .app import create_app
from .cli import main
from .policy import PolicyCompileError, ResourcePolicy, default_policy_text
from .reference import TdImageReference
from .settings import Settings, SettingsError, build_parser, parse_settings
from .store import KbsStore, StoreError

__all__ = [
    "DatabaseTarget",
    "KbsStore",
    "PolicyCompileError",
    "ResourcePolicy",
    "Settings",
    "SettingsError",
    "StoreError",
    "TdImageReference",
    "build_parser",
    "create_app",
    "default_policy_text",
    "main",
    "parse_settings",
]
