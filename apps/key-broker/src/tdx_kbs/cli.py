"""`tdx-kbs [options]` runs the key broker (`--help` lists every option)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from tdx_service_kit import ListenError, StartupSignals, configure_logging, run_app

from .app import create_app
from .policy import PolicyCompileError
from .sealing import StorageKeyError
from .settings import SettingsError, parse_settings
from .store import StoreError

log = logging.getLogger("tdx_kbs")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for bad settings)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        print(f"tdx-kbs: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    signals = StartupSignals().install()
    try:
        app = create_app(settings)
    except PolicyCompileError as exc:
        print(f"tdx-kbs: error: --policy: {exc.reason}", file=sys.stderr)
        return 2
    try:
        run_app(app, host=settings.host, port=settings.port, signals=signals)
    except (ListenError, StorageKeyError, StoreError) as exc:
        log.error("cannot start the key broker", extra={"reason": str(exc)})
        print(f"tdx-kbs: error: {exc}", file=sys.stderr)
        return 1
    return 0
