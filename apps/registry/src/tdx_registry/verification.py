"""Quote verification behind one narrow interface: full DCAP, or, under SKIP_TDX_AUTH, the
development hatch `UnsafeParseOnlyVerifier`, which verifies nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tdx_ppid import Ppid, quote_ppid
from tdx_quote import Quote, parse_quote
from tdx_verify import (
    CacheObserver,
    CollateralCache,
    CollateralFreshness,
    PccsClient,
    Policy,
    Verifier,
)

from .records import Verdict

log = logging.getLogger("tdx_registry.verification")


@dataclass(frozen=True)
class CheckedQuote:
    """What the registry needs from a quote once it is accepted (or merely parsed, if skipped):
    `rtmr3` is what an event log must replay to, `rtmrs` (RTMR0-3) what a CCEL must."""

    report_data: bytes
    ppid: bytes
    rtmr3: bytes
    verdict: Verdict
    rtmrs: tuple[bytes, ...] = ()


class QuoteVerifier(Protocol):
    """Turns raw quote bytes into a `CheckedQuote`, or raises a library error saying why not."""

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote: ...

    async def aclose(self) -> None: ...


class DcapFacts(Protocol):
    """What the registry reads of a `tdx_verify.VerifiedQuote`, which only tdx-verify's
    `Verifier` can make. A protocol, so that tests can stand in for the collateral cache with
    facts they claim, without forging a VerifiedQuote."""

    @property
    def quote(self) -> Quote: ...

    @property
    def tcb_status(self) -> str: ...

    @property
    def advisory_ids(self) -> tuple[str, ...]: ...

    @property
    def ppid(self) -> Ppid: ...

    @property
    def mr_td(self) -> bytes: ...

    @property
    def report_data(self) -> bytes: ...

    @property
    def verified_at(self) -> datetime: ...

    @property
    def tcb_grace_until(self) -> datetime | None: ...


class VerifyingCache(Protocol):
    """What `DcapQuoteVerifier` needs of `tdx_verify.CollateralCache`."""

    async def verify_quote(self, quote: bytes, *, now: datetime) -> DcapFacts: ...


class DcapQuoteVerifier:
    """Full DCAP verification with collateral from a PCCS, verified once and cached."""

    def __init__(self, cache: VerifyingCache, *, client: PccsClient | None = None) -> None:
        self._cache = cache
        self._client = client

    @classmethod
    def connect(
        cls,
        *,
        pccs_url: str,
        root_ca_pem: bytes | None,
        policy: Policy,
        freshness: CollateralFreshness | None = None,
        observer: CacheObserver | None = None,
    ) -> DcapQuoteVerifier:
        """A verifier fetching collateral from `pccs_url`, trusting `root_ca_pem` (else Intel's),
        refreshing it as `freshness` says (else tdx-verify's default, 24 h); `observer` hears
        the collateral cache's events (the registry's metrics)."""
        client = PccsClient(pccs_url)
        verifier = Verifier(root_ca_pem=root_ca_pem, policy=policy)
        cache = (
            CollateralCache(client, verifier, observer=observer)
            if freshness is None
            else CollateralCache(client, verifier, freshness=freshness, observer=observer)
        )
        return cls(cache, client=client)

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote:
        verified = await self._cache.verify_quote(quote, now=now)
        rtmr3 = verified.quote.body.rtmr3
        return CheckedQuote(
            report_data=verified.report_data,
            ppid=verified.ppid.value,
            rtmr3=rtmr3,
            verdict=Verdict(
                tcb_status=verified.tcb_status,
                advisory_ids=tuple(verified.advisory_ids),
                mr_td=verified.mr_td,
                verified_at=verified.verified_at,
                skipped=False,
                rtmr3=rtmr3,
                tcb_grace_until=verified.tcb_grace_until,
            ),
            rtmrs=verified.quote.body.rtmrs,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class UnsafeParseOnlyVerifier:
    """UNSAFE, development only (SKIP_TDX_AUTH): parse the quote and read its PPID, verify
    nothing. Any machine can register anything; every quote it accepts is logged as UNSAFE."""

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote:
        log.warning("UNSAFE: SKIP_TDX_AUTH: accepting a quote WITHOUT DCAP verification")
        parsed = parse_quote(quote)
        return CheckedQuote(
            report_data=parsed.body.report_data,
            ppid=quote_ppid(parsed).value,
            rtmr3=parsed.body.rtmr3,
            verdict=Verdict(
                tcb_status=None,
                advisory_ids=(),
                mr_td=parsed.body.mr_td,
                verified_at=now,
                skipped=True,
                rtmr3=parsed.body.rtmr3,
            ),
            rtmrs=parsed.body.rtmrs,
        )

    async def aclose(self) -> None:
        return None
