"""Intel PCCS / PCS v4 client, and a cache that fetches and verifies collateral once per platform
kind, refreshes it at least every `max_age`, and never goes back to older collateral."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import unquote

import httpx

from tdx_verify._collateral import Collateral, crl_der, raw_json_member
from tdx_verify._errors import (
    CollateralFormatError,
    CollateralRollback,
    PccsError,
    VerificationError,
)
from tdx_verify._pki import check_windows, iso
from tdx_verify._verifier import VerifiedQuote, Verifier, _VerifiedCollateral, parse

log = logging.getLogger("tdx_verify")

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_CA_TYPES = ("platform", "processor")


class PccsClient:
    """Fetches TDX collateral from a PCCS (or Intel PCS) speaking the v4 API.

    `base_url` is the server root, e.g. ``https://pccs.example:8081``; paths
    ``/sgx/certification/v4/...`` and ``/tdx/certification/v4/...`` are appended.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._max = max_response_bytes
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> PccsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def fetch_collateral(self, fmspc: bytes, ca: str) -> Collateral:
        """The PCK CRL of `ca` ("platform" or "processor"), the TDX TCB info of `fmspc`, the TD QE
        identity and the root CA CRL, with their issuer chains."""
        if ca not in _CA_TYPES:
            raise ValueError(f"ca must be one of {_CA_TYPES}, not {ca!r}")
        if len(fmspc) != 6:
            raise ValueError("fmspc must be 6 bytes")
        tasks = [
            asyncio.ensure_future(coro)
            for coro in (
                self._get("/sgx/certification/v4/pckcrl", {"ca": ca, "encoding": "der"}),
                self._get("/tdx/certification/v4/tcb", {"fmspc": fmspc.hex().upper()}),
                self._get("/tdx/certification/v4/qe/identity", None),
                self._get("/sgx/certification/v4/rootcacrl", None),
            )
        ]
        try:
            (pck, pck_h), (tcb, tcb_h), (qe, qe_h), (root, _) = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        try:
            tcb_text, qe_text = tcb.decode(), qe.decode()
            tcb_info, tcb_sig = _signed_member(tcb_text, "tcbInfo")
            qe_identity, qe_sig = _signed_member(qe_text, "enclaveIdentity")
            return Collateral(
                pck_crl_issuer_chain=_chain(pck_h, "SGX-PCK-CRL-Issuer-Chain"),
                root_ca_crl=crl_der(root, "root CA CRL"),
                pck_crl=crl_der(pck, "PCK CRL"),
                tcb_info_issuer_chain=_chain(
                    tcb_h, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
                ),
                tcb_info=tcb_info,
                tcb_info_signature=tcb_sig,
                qe_identity_issuer_chain=_chain(
                    qe_h, "SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain"
                ),
                qe_identity=qe_identity,
                qe_identity_signature=qe_sig,
            )
        except CollateralFormatError as exc:
            raise PccsError(f"malformed PCCS response: {exc}") from None
        except UnicodeDecodeError:
            raise PccsError("malformed PCCS response: body is not UTF-8") from None

    async def _get(self, path: str, params: dict[str, str] | None) -> tuple[bytes, httpx.Headers]:
        try:
            async with self._client.stream("GET", path, params=params) as response:
                if response.status_code != 200:
                    raise PccsError(f"GET {path}: HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self._max:
                    raise PccsError(f"GET {path}: response larger than {self._max} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max:
                        raise PccsError(f"GET {path}: response larger than {self._max} bytes")
                return bytes(body), response.headers
        except httpx.HTTPError as exc:
            raise PccsError(f"GET {path}: {type(exc).__name__}: {exc}") from None


def _chain(headers: httpx.Headers, *names: str) -> str:
    for name in names:
        value = headers.get(name)
        if value is not None:
            chain = unquote(value)
            if "-----BEGIN CERTIFICATE-----" not in chain:
                raise CollateralFormatError(name, "header is not a URL-encoded PEM chain")
            return chain
    raise CollateralFormatError(names[0], "issuer chain header is missing")


def _signed_member(text: str, key: str) -> tuple[str, bytes]:
    member = raw_json_member(text, key)
    signature = json.loads(text).get("signature")
    if not isinstance(signature, str):
        raise CollateralFormatError(key, "response has no string 'signature'")
    try:
        return member, bytes.fromhex(signature)
    except ValueError:
        raise CollateralFormatError(key, "signature is not hex") from None


DEFAULT_MAX_AGE = timedelta(hours=24)
DEFAULT_RETRY_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class CollateralFreshness:
    """How long `CollateralCache` trusts collateral it fetched.

    `max_age`: collateral is fetched again once it is this old, even long before its nextUpdate
    (up to 30 days away), so a new revocation or TCB recovery is seen within `max_age`.
    `retry_after`: when such a refresh fails, the collateral still valid keeps being served (a
    warning is logged) and the refresh is tried again this much later; once the collateral
    reaches its own nextUpdate, a failing fetch fails the verification.
    """

    max_age: timedelta = DEFAULT_MAX_AGE
    retry_after: timedelta = DEFAULT_RETRY_AFTER

    def __post_init__(self) -> None:
        for name in ("max_age", "retry_after"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValueError(f"{name} must be a positive timedelta, not {value!r}")


_DEFAULT_FRESHNESS = CollateralFreshness()

CacheEvent = Literal["hit", "fetched", "fetch_failed", "stale_served"]
"""What `CollateralCache` tells its observer, once per occurrence: `hit` (collateral served from
the cache, no fetch), `fetched` (a collateral set fetched from the PCCS and verified),
`fetch_failed` (a fetch or its verification failed), `stale_served` (after a failed refresh, the
collateral fetched before, still valid, served)."""
CacheObserver = Callable[[CacheEvent], None]


@dataclass(slots=True)
class _Entry:
    collateral: Collateral
    expires_at: float  # the earliest nextUpdate / notAfter of its pieces
    refresh_at: float  # fetched + max_age, or the next retry after a failed refresh


class CollateralCache:
    """Verifies quotes with collateral fetched once per (FMSPC, PCK CA) and verified once.

    Collateral is reused until the earliest nextUpdate/notAfter of its pieces, or until it is
    `freshness.max_age` old (24 h by default), whichever comes first; a refresh that fails while
    the collateral is still valid keeps serving it (see `CollateralFreshness`). The cache never
    accepts collateral older than what it has verified: a TCB info (per FMSPC) or QE identity
    with a lower tcbEvaluationDataNumber, or a PCK CRL (per CA) or root CA CRL with a lower CRL
    number raises `CollateralRollback` and the newer copy stays. Concurrent requests for the
    same platform share one fetch. `fetch_count` counts collateral sets fetched; `observer`, if
    given, is called with each `CacheEvent` (for metrics: the library itself exports none). It
    must not raise or block.
    """

    def __init__(
        self,
        client: PccsClient,
        verifier: Verifier,
        *,
        freshness: CollateralFreshness = _DEFAULT_FRESHNESS,
        observer: CacheObserver | None = None,
    ) -> None:
        self._client = client
        self._observer = observer
        self._verifier = verifier
        self._freshness = freshness
        self._entries: dict[tuple[bytes, str], _Entry] = {}
        self._inflight: dict[tuple[bytes, str], asyncio.Task[Collateral]] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self.fetch_count = 0

    def _notify(self, event: CacheEvent) -> None:
        if self._observer is not None:
            self._observer(event)

    async def verify_quote(self, quote: bytes, *, now: datetime) -> VerifiedQuote:
        """Parse `quote`, get verified collateral for its platform, and run `Verifier.verify`."""
        parsed = parse(quote)
        key = self._verifier._platform_of(parsed)
        collateral = await self._collateral(key, now.timestamp())
        return self._verifier.verify(parsed, collateral, now=now)

    async def _collateral(self, key: tuple[bytes, str], now: float) -> Collateral:
        entry = self._entries.get(key)
        if entry is not None and now < min(entry.refresh_at, entry.expires_at):
            self._notify("hit")
            return entry.collateral
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, now))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        try:
            return await asyncio.shield(task)
        except (PccsError, VerificationError):
            entry = self._entries.get(key)
            if entry is not None and now < entry.expires_at:
                self._notify("stale_served")
                return entry.collateral
            raise

    async def _fetch(self, key: tuple[bytes, str], now: float) -> Collateral:
        self.fetch_count += 1
        try:
            collateral = await self._client.fetch_collateral(*key)
            verified = self._verifier._verified_collateral(collateral)
            check_windows(verified.windows, now)
            marks = self._marks(key, verified)
        except (PccsError, VerificationError) as exc:
            self._notify("fetch_failed")
            entry = self._entries.get(key)
            if entry is not None and now < entry.expires_at:
                entry.refresh_at = now + self._freshness.retry_after.total_seconds()
                log.warning(
                    "collateral refresh failed; serving the collateral fetched before until "
                    f"{iso(entry.expires_at)}, next try at {iso(entry.refresh_at)}: {exc}",
                    extra={"fmspc": key[0].hex().upper(), "ca": key[1]},
                )
            raise
        self._seen.update(marks)
        self._entries[key] = _Entry(
            collateral, verified.expires_at, now + self._freshness.max_age.total_seconds()
        )
        self._notify("fetched")
        return collateral

    def _marks(
        self, key: tuple[bytes, str], verified: _VerifiedCollateral
    ) -> dict[tuple[str, str], int]:
        """The version numbers of `verified`, keyed by what they version; `CollateralRollback`
        when one is lower than (or missing after) the one already seen."""
        fmspc, ca = key[0].hex().upper(), key[1]
        pieces = (
            (
                ("tcb_info", fmspc),
                verified.tcb_info.evaluation_data_number,
                f"TCB info of FMSPC {fmspc}",
                "tcbEvaluationDataNumber",
            ),
            (
                ("qe_identity", ""),
                verified.qe_identity.evaluation_data_number,
                "QE identity",
                "tcbEvaluationDataNumber",
            ),
            (("pck_crl", ca), verified.pck_crl.number, f"PCK CRL of the {ca} CA", "CRL number"),
            (("root_ca_crl", ""), verified.root_crl_number, "root CA CRL", "CRL number"),
        )
        marks: dict[tuple[str, str], int] = {}
        for mark, got, item, field in pieces:
            seen = self._seen.get(mark)
            if seen is not None and (got is None or got < seen):
                raise CollateralRollback(
                    f"the PCCS answered a {item} with "
                    + (f"no {field}" if got is None else f"{field} {got}")
                    + f", older than the {seen} already verified (a replayed answer?); "
                    "the newer collateral is kept",
                    item=mark[0],
                    seen=seen,
                    got=got,
                )
            if got is not None:
                marks[mark] = got
        return marks
