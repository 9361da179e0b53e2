"""`tdx-registry [serve] ...` runs the registry; `tdx-registry verify-quote ...` checks a quote."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from tdx_service_kit import ListenError, StartupSignals, configure_logging, run_app
from tdx_verify.cli import main as verify_quote_main

from .app import create_app
from .log_key import LogKeyError, load_or_create_log_key
from .settings import SettingsError, parse_settings

log = logging.getLogger("tdx_registry")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for bad settings)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["verify-quote"]:
        return verify_quote_main(args[1:])
    if args[:1] == ["serve"]:
        args = args[1:]
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        print(f"tdx-registry: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        signer = load_or_create_log_key(settings.effective_log_key_path, settings.log_origin)
    except LogKeyError as exc:
        print(f"tdx-registry: error: {exc}", file=sys.stderr)
        return 2
    signals = StartupSignals().install()
    app = create_app(settings, log_signer=signer)
    try:
        run_app(app, host=settings.host, port=settings.port, signals=signals)
    except ListenError as exc:
        log.error("cannot start the registry", extra={"reason": str(exc)})
        return 1
    return 0
