"""`create_app(settings)`: the registry's Sanic app, its resources opened at server start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sanic import Sanic

from tdx_merkle import NoteSigner
from tdx_service_kit import OpenApiDocument, OpsMetrics, ReadinessCheck, install_common, install_ops
from tdx_verify import DEFAULT_MAX_AGE, CacheObserver, CollateralFreshness

from .challenges import Challenges
from .errors import install_error_mapping
from .log_key import load_or_create_log_key
from .ops import (
    CHECK_TIMEOUT,
    SKIPPED_PCCS,
    CountingVerifier,
    RegistryMetrics,
    database_check,
    pccs_check,
    registry_openapi,
)
from .read_cache import ReadCache
from .reappraise import Reappraiser, reappraise_forever
from .registration import Registrar
from .routes import challenge_blueprint, instance_blueprint, log_blueprint, register_blueprint
from .routes.instance import record_json
from .services import Services
from .settings import Settings
from .store import PonyRecordStore, RecordStore
from .verification import DcapQuoteVerifier, QuoteVerifier, UnsafeParseOnlyVerifier

log = logging.getLogger("tdx_registry")

SKIP_WARNING = (
    "UNSAFE: SKIP_TDX_AUTH IS ON: quotes are parsed but NOT verified (no DCAP, no PCCS, no TCB "
    "policy). Any machine can register anything. Development only."
)
V1_WARNING = (
    "V1: accepting v1 registrations (--accept-v1-registrations): they bind no registry "
    "challenge, so a captured one can be replayed; and v1 identity signatures, which name no "
    "role. Migrate every identity service to v2, then turn this off."
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_verifier(
    settings: Settings,
    *,
    freshness: CollateralFreshness | None = None,
    observer: CacheObserver | None = None,
) -> QuoteVerifier:
    """The quote verifier `settings` ask for: full DCAP (its collateral refreshed as `freshness`
    says, else tdx-verify's default; its cache's events to `observer`), or the unsafe
    parse-only hatch."""
    if settings.skip_tdx_auth:
        return UnsafeParseOnlyVerifier()
    return DcapQuoteVerifier.connect(
        pccs_url=settings.pccs_url,
        root_ca_pem=settings.trusted_root_ca_pem,
        policy=settings.policy,
        freshness=freshness,
        observer=observer,
    )


def build_reappraisal_verifier(settings: Settings, period: float) -> QuoteVerifier:
    """The verifier the background passes share: its collateral cache is refreshed at least
    every `period` (at most tdx-verify's default max age), so each pass sees the PCCS's current
    collateral, once per FMSPC, and tdx-verify's rollback refusal spans the passes."""
    max_age = min(timedelta(seconds=period), DEFAULT_MAX_AGE)
    return build_verifier(settings, freshness=CollateralFreshness(max_age=max_age))


def create_app(
    settings: Settings,
    *,
    name: str = "tdx-registry",
    store: RecordStore | None = None,
    verifier: QuoteVerifier | None = None,
    clock: Callable[[], datetime] = _utc_now,
    reappraisal_verifier: QuoteVerifier | None = None,
    log_signer: NoteSigner | None = None,
    metrics: OpsMetrics | None = None,
    openapi: OpenApiDocument | None = None,
) -> Sanic[Any, Any]:
    """Build the app. `store`/`verifier` replace the real ones (tests); the caller closes them.
    `clock` is the registry's time (challenge expiry, quote verification, record times).
    `reappraisal_verifier` replaces the verifier of the `--reappraise-every` passes (default:
    `build_reappraisal_verifier`, closed at stop). `log_signer` signs the log's checkpoints;
    None: the key file of `settings`, read (or created) now, `LogKeyError` if it is unusable.
    `metrics` (default: from the environment, multiprocess under PROMETHEUS_MULTIPROC_DIR) and
    `openapi` (default: the shipped document) feed /metrics and /openapi.json."""
    signer = (
        log_signer
        if log_signer is not None
        else load_or_create_log_key(settings.effective_log_key_path, settings.log_origin)
    )
    app: Sanic[Any, Any] = Sanic(name)
    install_common(app, limits=settings.limits, rate_limit=settings.rate_limit)
    install_error_mapping(app)
    checks = [
        database_check(lambda: app.ctx.services.store),
        ReadinessCheck.skipped("pccs", SKIPPED_PCCS)
        if settings.skip_tdx_auth
        else pccs_check(lambda: app.ctx.pccs_probe),
    ]
    ops = install_ops(
        app,
        openapi=openapi if openapi is not None else registry_openapi(),
        checks=checks,
        metrics=metrics,
    )
    registry_metrics = RegistryMetrics.register(ops.metrics)
    app.blueprint(challenge_blueprint())
    app.blueprint(register_blueprint())
    app.blueprint(instance_blueprint())
    app.blueprint(log_blueprint(signer, settings.log_origin))

    async def open_resources(app: Sanic[Any, Any]) -> None:
        if settings.skip_tdx_auth:
            log.warning(SKIP_WARNING)
        if settings.any_measurement:
            log.warning(
                "UNPINNED: accepting any MRTD and RTMR0-2 (--any-measurement): the registry "
                "does not know which TD image its instances run"
            )
        if settings.allow_missing_event_log:
            log.warning(
                "accepting registrations without an RTMR3 event log "
                "(--allow-missing-event-log): such a record says nothing about what the TD runs"
            )
        if settings.accept_v1_registrations:
            log.warning(V1_WARNING)
        the_store = (
            store
            if store is not None
            else await PonyRecordStore.open(
                settings.database, wire=record_json, log_verifier_key=signer.verifier_key()
            )
        )
        the_verifier: QuoteVerifier = CountingVerifier(
            verifier
            if verifier is not None
            else build_verifier(settings, observer=registry_metrics.cache_observer()),
            registry_metrics,
        )
        if not settings.skip_tdx_auth:
            app.ctx.pccs_probe = httpx.AsyncClient(
                base_url=settings.pccs_url, timeout=CHECK_TIMEOUT, follow_redirects=False
            )
        challenges = Challenges(the_store, settings.challenges, clock)
        registrar = Registrar(
            the_verifier,
            the_store,
            challenges,
            measurement_policy=settings.measurement_policy,
            allow_missing_event_log=settings.allow_missing_event_log,
            accept_v1=settings.accept_v1_registrations,
            clock=clock,
            ccel_policy=settings.ccel_policy,
        )
        app.ctx.services = Services(
            store=the_store,
            verifier=the_verifier,
            challenges=challenges,
            registrar=registrar,
            read_cache=ReadCache(
                ttl=settings.read_cache_ttl, max_bytes=settings.read_cache_max_bytes
            ),
            any_measurement=settings.any_measurement,
        )
        measurement = settings.measurement_policy
        log.info(
            "registry ready",
            extra={
                "database": settings.database.describe(),
                "pccs_url": settings.pccs_url,
                "custom_root_ca": settings.trusted_root_ca_pem is not None,
                "skip_tdx_auth": settings.skip_tdx_auth,
                "event_log_required": registrar.event_log_required,
                "pinned_helper_roles": sorted(measurement.executables or ()),
                "allowed_images": sorted(measurement.allowed_images or ()),
                "read_cache_ttl": settings.read_cache_ttl,
                "challenge_ttl": settings.challenges.ttl,
                "accept_v1_registrations": settings.accept_v1_registrations,
                "tcb_grace_days": settings.policy.tcb_grace_days,
                "denied_advisory_ids": sorted(settings.policy.denied_advisory_ids),
                "reappraise_every": settings.reappraise_every,
                "log_origin": settings.log_origin,
                "log_verifier_key": signer.verifier_key(),
            },
        )

    async def start_reappraisal(app: Sanic[Any, Any]) -> None:
        period = settings.reappraise_every
        if period is None:
            return
        the_verifier = reappraisal_verifier
        if the_verifier is None:
            the_verifier = build_reappraisal_verifier(settings, period)
            app.ctx.reappraisal_verifier = the_verifier
        services: Services = app.ctx.services
        reappraiser = Reappraiser(
            services.store,
            the_verifier,
            clock=clock,
            on_write=services.read_cache.invalidate,
        )
        app.ctx.reappraisal = asyncio.create_task(
            reappraise_forever(reappraiser.run_pass, period), name="registry-reappraisal"
        )
        log.info("background re-appraisal on", extra={"every_seconds": period})

    async def stop_reappraisal(app: Sanic[Any, Any]) -> None:
        task: asyncio.Task[None] | None = getattr(app.ctx, "reappraisal", None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.ctx.reappraisal = None
        own: QuoteVerifier | None = getattr(app.ctx, "reappraisal_verifier", None)
        if own is not None:
            await own.aclose()
            app.ctx.reappraisal_verifier = None
        log.info("background re-appraisal stopped")

    async def close_resources(app: Sanic[Any, Any]) -> None:
        probe: httpx.AsyncClient | None = getattr(app.ctx, "pccs_probe", None)
        if probe is not None:
            await probe.aclose()
        services: Services | None = getattr(app.ctx, "services", None)
        if services is None:
            return
        if verifier is None:
            await services.verifier.aclose()
        if store is None:
            await services.store.close()

    app.register_listener(open_resources, "before_server_start")
    app.register_listener(start_reappraisal, "after_server_start")
    app.register_listener(stop_reappraisal, "before_server_stop")
    app.register_listener(close_resources, "after_server_stop")
    return app
