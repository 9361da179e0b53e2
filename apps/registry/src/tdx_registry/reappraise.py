"""Re-appraisal: verify every stored quote again with current collateral, at the current time,
with the registry's policy, and record the verdicts that changed.

One pass walks the instance keys in pages, reads each record, verifies its stored quote through
the re-appraisal's collateral cache (collateral is fetched once per FMSPC and PCK CA, not once
per record: `tdx-registry reappraise` makes a fresh cache; the server keeps one across passes,
refreshed at least every period, so that tdx-verify's rollback refusal spans the passes), and
writes a verdict that concludes differently (status, advisories, grace, refusal) through
`RecordStore.register` with the old one pushed into the record's history; an unchanged verdict
writes nothing. Records with a `skipped` verdict (SKIP_TDX_AUTH) are left alone.

A quote that no longer verifies for a reason about the platform or the quote (policy, a revoked
PCK, an unknown TCB level, the QE identity, the PCK chain) is recorded as refused:
`Verdict.refused` holds `"<step>: <reason>"`, with the refused TCB status and advisories when the
policy named them. A failure of the PCCS, or collateral that does not verify, says nothing
about the platform: the pass stops there, writes nothing more, and reports it (exit status 1
for `tdx-registry reappraise`).

Several replicas may run passes at once: each write is a merge that only applies to the exact
record that was verified and only when the verdict still differs, so a second replica's write
of the same verdict is dropped and a registration in between wins; they only repeat work.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tdx_verify import (
    AdvisoryDenied,
    PccsError,
    PckChainError,
    PolicyError,
    QeIdentityError,
    QeReportError,
    QuoteParseError,
    QuoteSignatureError,
    RevokedError,
    TcbLevelError,
    TcbStatusRejected,
    VerificationError,
)

from .records import InstanceRecord, Verdict
from .store import RecordStore, StoreError
from .verification import QuoteVerifier

log = logging.getLogger("tdx_registry.reappraise")

PAGE_SIZE = 100
"""Instance keys read per page of a pass."""
MAX_LISTED_FAILURES = 100
"""Failures named in a summary (all are counted)."""
JITTER = 0.1
"""The background pass waits its period times a random factor in [1, 1 + JITTER)."""

PLATFORM_REFUSALS: tuple[type[VerificationError], ...] = (
    PolicyError,
    RevokedError,
    TcbLevelError,
    QeIdentityError,
    PckChainError,
    QeReportError,
    QuoteSignatureError,
    QuoteParseError,
)
"""Verification failures that say the stored quote is no longer accepted; any other
`VerificationError` is about the collateral the PCCS served."""


_CHECK_TIME = re.compile(r" \(now [^()]*\)\Z")
"""The time of the check that tdx-verify appends to a validity-window refusal
("PCK leaf certificate expired at T (now N)")."""


def refusal_reason(exc: VerificationError) -> str:
    """`"<step>: <reason>"` of a refusal, without the time of the check: the same refusal reads
    the same at every pass, so it is recorded once (else every pass would find it changed and
    append a leaf and a history entry)."""
    return f"{exc.step}: {_CHECK_TIME.sub('', exc.reason)}"


class ReappraisalAborted(Exception):
    """The pass stopped: the PCCS, its collateral or the database failed."""


class VerdictNotWritten(Exception):
    """A re-appraisal merge that must not write (rolled back)."""


class RecordSuperseded(VerdictNotWritten):
    """The record changed since it was read (a registration in between): its verdict is newer."""


class VerdictAlreadyCurrent(VerdictNotWritten):
    """The stored verdict already concludes this (another replica wrote it)."""


@dataclass(frozen=True)
class Failure:
    instance_pubkey: str
    reason: str


@dataclass
class ReappraisalSummary:
    """What a pass did. `checked` counts every record read (= changed + unchanged + skipped +
    superseded + failed); `aborted` names why the pass stopped early, if it did."""

    checked: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    superseded: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    aborted: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed: the pass looked at every record."""
        return self.aborted is None and self.failed == 0

    def fail(self, key: bytes, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(Failure(key.hex(), reason))

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "superseded": self.superseded,
            "failed": self.failed,
            "failures": [
                {"instance_pubkey": f.instance_pubkey, "reason": f.reason} for f in self.failures
            ],
            "aborted": self.aborted,
        }


def refused_verdict(stored: Verdict, exc: VerificationError, *, now: datetime) -> Verdict:
    """The verdict recording that the stored quote is refused now, for `exc`'s reason."""
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    if isinstance(exc, TcbStatusRejected | AdvisoryDenied):
        tcb_status, advisory_ids = exc.tcb_status, tuple(exc.advisory_ids)
    return Verdict(
        tcb_status=tcb_status,
        advisory_ids=advisory_ids,
        mr_td=stored.mr_td,
        verified_at=now,
        skipped=False,
        rtmr3=stored.rtmr3,
        tcb_grace_until=None,
        refused=refusal_reason(exc),
    )


def reappraised(
    read: InstanceRecord, verdict: Verdict, now: datetime
) -> Callable[[InstanceRecord | None], InstanceRecord]:
    """The merge writing `verdict` over `read`, only if the stored record is still exactly
    `read` (the store hands the merge a record without its workload and SSH host key, which
    `read` carries) and its verdict still differs."""

    def merge(existing: InstanceRecord | None) -> InstanceRecord:
        if existing is None or existing != replace(read, workload=None, ssh_host_key=None):
            raise RecordSuperseded()
        if existing.verdict.same_appraisal(verdict):
            raise VerdictAlreadyCurrent()
        return replace(read.with_verdict(verdict, now=now), updated_at=now)

    return merge


class Reappraiser:
    """Runs re-appraisal passes over `store` with `verifier` (which the caller closes).
    `on_write(pubkey)` is called after each attempted write of a new verdict, committed or not
    (the server's read cache invalidation, as after a registration)."""

    def __init__(
        self,
        store: RecordStore,
        verifier: QuoteVerifier,
        *,
        clock: Callable[[], datetime],
        page_size: int = PAGE_SIZE,
        on_write: Callable[[bytes], None] | None = None,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._clock = clock
        self._page_size = page_size
        self._on_write = on_write

    async def run_pass(self) -> ReappraisalSummary:
        """One pass over every record; never raises for a PCCS or database failure (the summary
        says so)."""
        summary = ReappraisalSummary()
        try:
            await self._walk(self._verifier, summary)
        except ReappraisalAborted as exc:
            summary.aborted = str(exc)
            log.error("re-appraisal stopped", extra={"reason": summary.aborted})
        log.info("re-appraisal pass done", extra=summary.to_json() | {"failures": None})
        return summary

    async def _walk(self, verifier: QuoteVerifier, summary: ReappraisalSummary) -> None:
        after: bytes | None = None
        while True:
            try:
                keys = await self._store.instance_keys(after=after, limit=self._page_size)
            except StoreError as exc:
                raise ReappraisalAborted(f"the database failed: {exc}") from None
            if not keys:
                return
            for key in keys:
                await self._one(verifier, key, summary)
                await asyncio.sleep(0)
            after = keys[-1]
            log.info(
                "re-appraisal progress",
                extra={"checked": summary.checked, "changed": summary.changed},
            )

    async def _one(self, verifier: QuoteVerifier, key: bytes, summary: ReappraisalSummary) -> None:
        summary.checked += 1
        try:
            record = await self._store.get(key)
        except StoreError as exc:
            summary.fail(key, f"the record could not be read: {exc}")
            return
        if record is None:
            summary.superseded += 1
            return
        if record.verdict.skipped:
            summary.skipped += 1
            return
        now = self._clock()
        try:
            verdict = (await verifier.check(record.attestation_quote, now=now)).verdict
        except PccsError as exc:
            summary.fail(key, f"the PCCS failed: {exc}")
            raise ReappraisalAborted(f"the PCCS failed: {exc}") from None
        except PLATFORM_REFUSALS as exc:
            verdict = refused_verdict(record.verdict, exc, now=now)
        except VerificationError as exc:
            summary.fail(key, f"the collateral failed at {exc.step}: {exc.reason}")
            raise ReappraisalAborted(
                f"the PCCS's collateral failed at {exc.step}: {exc.reason}"
            ) from None
        if record.verdict.same_appraisal(verdict):
            summary.unchanged += 1
            return
        try:
            await self._store.register(key, reappraised(record, verdict, now))
        except RecordSuperseded:
            summary.superseded += 1
            return
        except VerdictAlreadyCurrent:
            summary.unchanged += 1
            return
        except StoreError as exc:
            summary.fail(key, f"the new verdict could not be stored: {exc}")
            return
        finally:
            if self._on_write is not None:
                self._on_write(key)
        summary.changed += 1
        log.info(
            "verdict changed",
            extra={
                "instance": key.hex(),
                "tcb_status": verdict.tcb_status,
                "was": record.verdict.tcb_status,
                "refused": verdict.refused,
            },
        )


def jittered(period: float) -> float:
    """`period` stretched by a random factor in [1, 1 + JITTER), so that replicas started
    together drift apart."""
    return period * (1 + JITTER * secrets.SystemRandom().random())


async def reappraise_forever(
    run_pass: Callable[[], Awaitable[ReappraisalSummary]],
    period: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run a pass `period` seconds (jittered) after start and after the end of each pass, one at a
    time, until cancelled; an error is logged and the next pass still runs."""
    while True:
        await sleep(jittered(period))
        try:
            await run_pass()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("re-appraisal pass failed")
