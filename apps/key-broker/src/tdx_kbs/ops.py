"""The key broker's operations routes (service-kit's `install_ops`): `GET /healthz`,
`GET /readyz` over the database and the PCCS, `GET /metrics` with the broker's own counters,
and `GET /openapi.json` (the `openapi.json` shipped beside this module).

Readiness checks, each under service-kit's short timeout:

- `database`: the store answers a query (`SELECT 1` on its database thread);
- `pccs`: the PCCS answers `GET /sgx/certification/v4/rootcacrl` with 200 (skipped when the app
  was given its own quote verifier instead of DCAP over a PCCS).

A failed check's reason names the dependency and the kind of failure, never the database URL or
the PCCS URL (either may carry credentials). The broker's metrics, beside service-kit's requests
and latencies (plain counters: in multiprocess mode too):

- `tdx_kbs_attestations_total{result}`: `verified`, or the step that refused it (`session`,
  `malformed`, `nonce`, `identity_evidence`, `binding`, `quote`, `event_log`,
  `collateral_unavailable`, `error`);
- `tdx_kbs_resource_releases_total{outcome}`: `released`, `denied`, `not_found`, `no_token`,
  `bad_token`, `bad_path`, `unavailable`, `error`;
- `tdx_kbs_policy_denials_total`: releases the resource policy denied.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from prometheus_client import Counter
from sanic import Sanic

from tdx_kbs_protocol import MessageError, ResourcePathError
from tdx_service_kit import (
    CheckFailed,
    OpenApiDocument,
    Ops,
    OpsMetrics,
    ReadinessCheck,
    install_ops,
)

from .errors import InvalidPath, KbsMessageError, PolicyDenied, ResourceNotFound, TokenMissing
from .sealing import SealError
from .sessions import SessionError
from .store import KbsStore, StoreError
from .tokens import TokenError
from .verification import (
    BindingMismatch,
    CollateralUnavailable,
    EventLogRefused,
    IdentityEvidenceRefused,
    NonceMismatch,
    QuoteRefused,
)

__all__ = [
    "ATTESTATION_RESULTS",
    "NAMESPACE",
    "RELEASE_OUTCOMES",
    "BrokerMetrics",
    "attestation_result",
    "database_check",
    "install_broker_ops",
    "openapi_document",
    "pccs_check",
    "release_outcome",
]

T = TypeVar("T")

log = logging.getLogger("tdx_kbs.ops")

NAMESPACE = "tdx_kbs"
PCCS_PROBE_PATH = "/sgx/certification/v4/rootcacrl"
PCCS_TIMEOUT = 1.5
"""Seconds the PCCS may take (service-kit gives each check 2 s)."""

_ATTEST_STEPS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (SessionError, "session"),
    ((MessageError, KbsMessageError), "malformed"),
    (NonceMismatch, "nonce"),
    (IdentityEvidenceRefused, "identity_evidence"),
    (BindingMismatch, "binding"),
    (QuoteRefused, "quote"),
    (EventLogRefused, "event_log"),
    (CollateralUnavailable, "collateral_unavailable"),
)
ATTESTATION_RESULTS = ("verified", *(result for _, result in _ATTEST_STEPS), "error")

_RELEASE_OUTCOMES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (PolicyDenied, "denied"),
    (ResourceNotFound, "not_found"),
    (TokenMissing, "no_token"),
    (TokenError, "bad_token"),
    ((ResourcePathError, InvalidPath), "bad_path"),
    ((StoreError, SealError), "unavailable"),
)
RELEASE_OUTCOMES = ("released", *(outcome for _, outcome in _RELEASE_OUTCOMES), "error")


def attestation_result(exc: Exception) -> str:
    """The `result` label of an attest that raised `exc`."""
    return next((result for kind, result in _ATTEST_STEPS if isinstance(exc, kind)), "error")


def release_outcome(exc: Exception) -> str:
    """The `outcome` label of a resource request that raised `exc`."""
    return next((outcome for kind, outcome in _RELEASE_OUTCOMES if isinstance(exc, kind)), "error")


@dataclass(frozen=True)
class BrokerMetrics:
    """The broker's counters, on the app's metric registry."""

    attestations: Counter
    releases: Counter
    policy_denials: Counter

    @classmethod
    def on(cls, metrics: OpsMetrics) -> BrokerMetrics:
        made = cls(
            attestations=metrics.counter(
                "attestations", "Attests answered, by result (verified or the refusing step)",
                ("result",),
            ),
            releases=metrics.counter(
                "resource_releases", "Resource requests answered, by outcome", ("outcome",)
            ),
            policy_denials=metrics.counter(
                "policy_denials", "Resource releases the resource policy denied"
            ),
        )  # fmt: skip
        for result in ATTESTATION_RESULTS:
            made.attestations.labels(result)
        for outcome in RELEASE_OUTCOMES:
            made.releases.labels(outcome)
        return made

    async def attest(self, attest: Awaitable[T]) -> T:
        """Await `attest`, counting its result."""
        try:
            answer = await attest
        except Exception as exc:
            self.attestations.labels(attestation_result(exc)).inc()
            raise
        self.attestations.labels("verified").inc()
        return answer

    async def release(self, release: Awaitable[T]) -> T:
        """Await the resource request `release`, counting its outcome (and a policy denial)."""
        try:
            answer = await release
        except Exception as exc:
            self.releases.labels(release_outcome(exc)).inc()
            if isinstance(exc, PolicyDenied):
                self.policy_denials.inc()
            raise
        self.releases.labels("released").inc()
        return answer


def openapi_document() -> OpenApiDocument:
    """The key broker's OpenAPI 3.1 document, with service-kit's four routes."""
    return OpenApiDocument.from_package("tdx_kbs", "openapi.json")


def database_check(store: Callable[[], KbsStore | None]) -> ReadinessCheck:
    """Ready while the store (opened at server start) answers a query."""

    async def check() -> None:
        current = store()
        if current is None:
            raise CheckFailed("the database is not open yet")
        try:
            await current.ping()
        except StoreError as exc:
            log.warning("readiness: the database did not answer", extra={"reason": str(exc)})
            raise CheckFailed("the database did not answer (StoreError)") from None

    return ReadinessCheck(name="database", check=check)


def pccs_check(
    pccs_url: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> ReadinessCheck:
    """Ready while the PCCS answers its root CA CRL with 200."""
    url = pccs_url.rstrip("/") + PCCS_PROBE_PATH

    async def check() -> None:
        try:
            async with httpx.AsyncClient(
                timeout=PCCS_TIMEOUT, transport=transport, follow_redirects=False
            ) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise CheckFailed(f"the PCCS did not answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise CheckFailed(
                f"the PCCS answered {PCCS_PROBE_PATH} with HTTP {response.status_code}"
            )

    return ReadinessCheck(name="pccs", check=check)


def install_broker_ops(
    app: Sanic[Any, Any], *, pccs_url: str | None, metrics: OpsMetrics | None = None
) -> tuple[Ops, BrokerMetrics]:
    """Install the four routes on the broker's app; `pccs_url` None skips the PCCS check (the
    app verifies quotes with a verifier it was given). The store is read from `app.ctx.store`,
    which the server-start listener sets."""

    def store() -> KbsStore | None:
        current: KbsStore | None = getattr(app.ctx, "store", None)
        return current

    checks = [database_check(store)]
    if pccs_url is None:
        checks.append(
            ReadinessCheck.skipped("pccs", "quotes are verified by a verifier the app was given")
        )
    else:
        checks.append(pccs_check(pccs_url))
    the_metrics = metrics or OpsMetrics.from_environment(NAMESPACE)
    broker_metrics = BrokerMetrics.on(the_metrics)
    ops = install_ops(app, openapi=openapi_document(), checks=checks, metrics=the_metrics)
    return ops, broker_metrics
