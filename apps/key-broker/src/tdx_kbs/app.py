"""`create_app(settings)`: the key broker's Sanic app, its resources opened at server start."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, empty, json

from tdx_service_kit import install_common

from .broker import Answer, KeyBroker, PolicySource
from .errors import UnknownEndpoint, install_error_mapping
from .ops import BrokerMetrics, install_broker_ops
from .policy import ResourcePolicy, default_policy_text
from .sealing import ResourceSealer, load_or_create_storage_key
from .sessions import SessionTable
from .settings import Settings
from .store import KbsStore
from .tokens import TokenIssuer
from .verification import DcapVerifier, EvidenceVerifier, QuoteVerifier

log = logging.getLogger("tdx_kbs")

SESSION_COOKIE = "kbs-session-id"
UNPINNED_WARNING = (
    "UNPINNED: the TD image is not pinned (--any-measurement): the policy input's reference "
    "is null (or null for each register no allow-list names), and the shipped policy then "
    "releases store keys to ANY TD image, including one the host built to steal them"
)
PREFIX = "/kbs/v0"


def _broker(request: Request) -> KeyBroker:
    broker: KeyBroker = request.app.ctx.broker
    return broker


def _metrics(request: Request) -> BrokerMetrics:
    metrics: BrokerMetrics = request.app.ctx.broker_metrics
    return metrics


def _with_cookie(answer: Answer, broker: KeyBroker) -> HTTPResponse:
    response = json(answer.body)
    if answer.session is not None:
        response.add_cookie(
            SESSION_COOKIE,
            answer.session.id,
            path=PREFIX,
            max_age=broker.cookie_max_age(answer.session),
            httponly=True,
            secure=False,
            samesite="Strict",
        )
    return response


def kbs_blueprint() -> Blueprint:
    """The KBS routes (a fresh blueprint per app)."""
    bp = Blueprint("kbs", url_prefix=PREFIX)

    @bp.post("/auth")
    async def auth(request: Request) -> HTTPResponse:
        broker = _broker(request)
        return _with_cookie(broker.auth(request.body), broker)

    @bp.post("/attest")
    async def attest(request: Request) -> HTTPResponse:
        broker = _broker(request)
        answer = await _metrics(request).attest(
            broker.attest(request.cookies.get(SESSION_COOKIE), request.body)
        )
        return _with_cookie(answer, broker)

    @bp.get("/resource/<path:path>")
    async def get_resource(request: Request, path: str) -> HTTPResponse:
        jwe = await _metrics(request).release(
            _broker(request).get_resource(
                path, request.cookies.get(SESSION_COOKIE), request.headers.get("authorization")
            )
        )
        return json(jwe)

    @bp.post("/resource/<path:path>")
    async def put_resource(request: Request, path: str) -> HTTPResponse:
        await _broker(request).put_resource(
            path, request.body or b"", request.headers.get("authorization")
        )
        return empty(status=200)

    @bp.post("/resource-policy")
    async def set_policy(request: Request) -> HTTPResponse:
        await _broker(request).set_policy(request.body, request.headers.get("authorization"))
        return empty(status=200)

    @bp.route("/<rest:path>", methods=["GET", "POST", "PUT", "DELETE"])  # type: ignore[untyped-decorator]
    async def unknown(request: Request, rest: str) -> HTTPResponse:
        raise UnknownEndpoint(f"no endpoint {rest.split('/')[0][:64]!r} under {PREFIX}")

    return bp


def create_app(
    settings: Settings,
    *,
    name: str = "tdx-kbs",
    quotes: QuoteVerifier | None = None,
    clock: Callable[[], float] = time.time,
) -> Sanic[Any, Any]:
    """Build the app. `quotes` replaces the DCAP verifier built from the settings (the caller
    closes it); `clock` is the broker's time (sessions, tokens, admin tokens, records)."""
    initial_text = (
        settings.initial_policy if settings.initial_policy is not None else default_policy_text()
    )
    fallback = ResourcePolicy.compile(initial_text)
    app: Sanic[Any, Any] = Sanic(name)
    install_common(app, limits=settings.limits, rate_limit=settings.rate_limit)
    install_error_mapping(app)
    app.blueprint(kbs_blueprint())
    _, app.ctx.broker_metrics = install_broker_ops(
        app, pccs_url=settings.pccs_url if quotes is None else None
    )

    reference_json = None if settings.reference is None else settings.reference.to_json()

    async def open_resources(app: Sanic[Any, Any]) -> None:
        sealer = ResourceSealer(load_or_create_storage_key(settings.storage_key_path))
        store = await KbsStore.open(settings.database)
        dcap: DcapVerifier | None = None
        if quotes is None:
            dcap = DcapVerifier.connect(
                pccs_url=settings.pccs_url, root_ca_pem=settings.trusted_root_ca_pem
            )
        app.ctx.store = store
        app.ctx.dcap = dcap
        app.ctx.broker = KeyBroker(
            store=store,
            sealer=sealer,
            sessions=SessionTable(settings.sessions, clock),
            tokens=TokenIssuer(settings.token_ttl),
            evidence=EvidenceVerifier(quotes if quotes is not None else dcap),  # type: ignore[arg-type]
            policies=PolicySource(store, fallback),
            admin_pubkey=settings.admin_pubkey,
            reference=settings.reference,
            clock=clock,
        )
        if settings.any_measurement:
            log.warning(UNPINNED_WARNING, extra={"reference": reference_json})
        log.info(
            "key broker ready",
            extra={
                "database": settings.database.describe(),
                "storage_key_path": str(settings.storage_key_path),
                "pccs_url": settings.pccs_url,
                "custom_root_ca": settings.trusted_root_ca_pem is not None,
                "admin_pubkey": settings.admin_pubkey_raw.hex(),
                "session_ttl": settings.sessions.ttl,
                "max_sessions": settings.sessions.max_sessions,
                "token_ttl": settings.token_ttl,
                "startup_policy_sha256": fallback.sha256,
                "startup_policy": "--policy" if settings.initial_policy is not None else "default",
                "reference": reference_json,
            },
        )

    async def close_resources(app: Sanic[Any, Any]) -> None:
        dcap: DcapVerifier | None = getattr(app.ctx, "dcap", None)
        if dcap is not None:
            await dcap.aclose()
        store: KbsStore | None = getattr(app.ctx, "store", None)
        if store is not None:
            await store.close()

    app.register_listener(open_resources, "before_server_start")
    app.register_listener(close_resources, "after_server_stop")
    return app
