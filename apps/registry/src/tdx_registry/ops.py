"""The registry's operations routes: readiness of the database and the PCCS, and its metrics
(verifications by result and failing step, PCCS fetches, collateral cache hits)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx
from prometheus_client import Counter

from tdx_ppid import PpidError
from tdx_quote import QuoteFormatError
from tdx_service_kit import CheckFailed, OpenApiDocument, OpsMetrics, ReadinessCheck
from tdx_verify import CacheEvent, PccsError, VerificationError

from .store import RecordStore, StoreError
from .verification import CheckedQuote, QuoteVerifier

OPENAPI_RESOURCE: Final = "openapi.json"
PCCS_PROBE_PATH: Final = "/sgx/certification/v4/rootcacrl"
"""The PCCS route /readyz asks: small, and one every PCCS (and tdx-sim) answers."""
CHECK_TIMEOUT: Final = 2.0
SKIPPED_PCCS: Final = "SKIP_TDX_AUTH is on: quotes are not verified, no PCCS is used (UNSAFE)"
_STEP: Final = re.compile(r"[a-z][a-z0-9_ ]{0,39}")
_NO_INSTANCE: Final = bytes(32)


def registry_openapi() -> OpenApiDocument:
    """The registry's OpenAPI 3.1 document (package data), with the kit's ops routes."""
    return OpenApiDocument.from_package("tdx_registry", OPENAPI_RESOURCE)


@dataclass(frozen=True)
class RegistryMetrics:
    """The registry's own counters, registered beside the kit's request metrics."""

    verifications: Counter
    pccs_fetches: Counter
    cache_hits: Counter
    stale_served: Counter

    @classmethod
    def register(cls, metrics: OpsMetrics) -> RegistryMetrics:
        return cls(
            verifications=metrics.counter(
                "quote_verifications",
                "quote verifications of registrations by result (verified, skipped, refused, "
                "error) and failing step",
                ("result", "step"),
            ),
            pccs_fetches=metrics.counter(
                "pccs_fetches", "collateral sets fetched from the PCCS, by result", ("result",)
            ),
            cache_hits=metrics.counter(
                "collateral_cache_hits", "verifications served collateral from the cache"
            ),
            stale_served=metrics.counter(
                "collateral_stale_served",
                "verifications served still-valid collateral after a failed refresh",
            ),
        )

    def cache_observer(self) -> Callable[[CacheEvent], None]:
        """The `tdx_verify.CollateralCache` observer that counts its events here."""

        def observe(event: CacheEvent) -> None:
            if event == "hit":
                self.cache_hits.inc()
            elif event == "fetched":
                self.pccs_fetches.labels("ok").inc()
            elif event == "fetch_failed":
                self.pccs_fetches.labels("failed").inc()
            else:
                self.stale_served.inc()

        return observe


def failing_step(exc: Exception) -> tuple[str, str] | None:
    """(result, step) of a failed verification, from the library's error classes; None when
    `exc` is not a verification failure (it is then not counted)."""
    if isinstance(exc, VerificationError):
        step = exc.step if _STEP.fullmatch(exc.step) else "other"
        return "refused", step
    if isinstance(exc, QuoteFormatError):
        return "refused", "quote"
    if isinstance(exc, PpidError):
        return "refused", "ppid"
    if isinstance(exc, PccsError):
        return "error", "pccs"
    return None


class CountingVerifier:
    """A `QuoteVerifier` that counts each outcome of the one it wraps."""

    def __init__(self, inner: QuoteVerifier, metrics: RegistryMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote:
        try:
            checked = await self._inner.check(quote, now=now)
        except Exception as exc:
            outcome = failing_step(exc)
            if outcome is not None:
                self._metrics.verifications.labels(*outcome).inc()
            raise
        result = "skipped" if checked.verdict.skipped else "verified"
        self._metrics.verifications.labels(result, "").inc()
        return checked

    async def aclose(self) -> None:
        await self._inner.aclose()


def database_check(store: Callable[[], RecordStore]) -> ReadinessCheck:
    """The database answers a read (of an instance key no instance has)."""

    async def check() -> None:
        try:
            await store().get(_NO_INSTANCE)
        except StoreError as exc:
            raise CheckFailed(f"the database did not answer ({type(exc).__name__})") from None

    return ReadinessCheck("database", check, timeout=CHECK_TIMEOUT)


def pccs_check(client: Callable[[], httpx.AsyncClient]) -> ReadinessCheck:
    """The PCCS answers 200 to the root CA CRL request (the URL, which may carry credentials,
    is never in the reason)."""

    async def check() -> None:
        try:
            async with client().stream("GET", PCCS_PROBE_PATH) as response:
                status = response.status_code  # the body is not read
        except httpx.HTTPError as exc:
            raise CheckFailed(f"the PCCS did not answer ({type(exc).__name__})") from None
        if status != 200:
            raise CheckFailed(f"the PCCS answered HTTP {status}")

    return ReadinessCheck("pccs", check, timeout=CHECK_TIMEOUT)
