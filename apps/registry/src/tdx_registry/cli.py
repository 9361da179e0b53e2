"""`tdx-registry [serve] ...` runs the registry; `tdx-registry reappraise ...` re-appraises every
stored quote once; `tdx-registry verify-quote ...` checks a quote."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pony.orm import DBException, OrmError
from sanic import Sanic

from tdx_merkle import NoteSigner
from tdx_service_kit import (
    ListenError,
    OpsError,
    StartupSignals,
    WorkerError,
    configure_logging,
    run_app,
    run_workers,
)
from tdx_verify.cli import main as verify_quote_main

from .app import build_verifier, create_app
from .log_key import LogKeyError, load_or_create_log_key
from .log_pin import LogKeyPinError
from .reappraise import ReappraisalSummary, Reappraiser
from .routes.instance import record_json
from .settings import Settings, SettingsError, parse_settings
from .store import PonyRecordStore, StoreError, pin_log_key

log = logging.getLogger("tdx_registry")


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def reappraise_once(settings: Settings) -> ReappraisalSummary:
    """One re-appraisal pass over the database of `settings` (`tdx-registry reappraise`)."""
    try:
        store = await PonyRecordStore.open(settings.database)
    except (StoreError, OrmError, DBException) as exc:
        log.error("cannot open the database", extra={"reason": str(exc)})
        return ReappraisalSummary(aborted=f"the database failed: {exc}")
    verifier = build_verifier(settings)
    try:
        return await Reappraiser(store, verifier, clock=_utc_now).run_pass()
    finally:
        await verifier.aclose()
        await store.close()


def worker_app(settings: Settings, index: int) -> Sanic[Any, Any]:
    """The app of worker `index` of `tdx-registry --workers N`, built in that worker's process
    (its logging configured, its log key read from the file the parent checked). The
    background re-appraisal runs in worker 0 only: one pass at a time over the database."""
    configure_logging(settings.log_level)
    if index > 0:
        settings = replace(settings, reappraise_every=None)
    return create_app(settings)


async def prepare_database(settings: Settings, signer: NoteSigner) -> None:
    """Open the store once and close it: the tables are made and the log backfilled by one
    process before the workers open it at once."""
    store = await PonyRecordStore.open(
        settings.database, wire=record_json, log_verifier_key=signer.verifier_key()
    )
    await store.close()


def _serve_workers(settings: Settings, signer: NoteSigner, signals: StartupSignals) -> int:
    try:
        asyncio.run(prepare_database(settings, signer))
    except (StoreError, OrmError, DBException) as exc:
        print(f"tdx-registry: error: cannot open the database: {exc}", file=sys.stderr)
        return 1
    try:
        return run_workers(
            partial(worker_app, settings),
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            signals=signals,
        )
    except (ListenError, WorkerError) as exc:
        log.error("cannot start the registry", extra={"reason": str(exc)})
        return 1


def _reappraise(args: list[str]) -> int:
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        print(f"tdx-registry reappraise: error: {exc}", file=sys.stderr)
        return 2
    if settings.skip_tdx_auth:
        print(
            "tdx-registry reappraise: error: SKIP_TDX_AUTH is on: there is nothing to "
            "re-appraise without quote verification",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level)
    summary = asyncio.run(reappraise_once(settings))
    print(json.dumps(summary.to_json(), sort_keys=True))
    return 0 if summary.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for bad settings)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["verify-quote"]:
        return verify_quote_main(args[1:])
    if args[:1] == ["reappraise"]:
        return _reappraise(args[1:])
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
    try:
        pin_log_key(settings.database, signer.verifier_key())
    except LogKeyPinError as exc:
        print(f"tdx-registry: error: {exc}", file=sys.stderr)
        return 1
    signals = StartupSignals().install()
    if settings.workers > 1:
        return _serve_workers(settings, signer, signals)
    try:
        app = create_app(settings, log_signer=signer)
    except OpsError as exc:
        print(f"tdx-registry: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_app(app, host=settings.host, port=settings.port, signals=signals)
    except ListenError as exc:
        log.error("cannot start the registry", extra={"reason": str(exc)})
        return 1
    return 0
