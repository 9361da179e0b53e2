"""The values the registry stores and serves: one instance record with its verdict and its
RTMR3 event log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from tdx_measure import WorkloadEvent
from tdx_report_data import IdentityInfo

VERDICT_HISTORY_LIMIT = 64
"""How many replaced verdicts a record keeps (the most recent ones)."""


@dataclass(frozen=True)
class Verdict:
    """What quote verification concluded, kept with the record.

    `skipped` is True when SKIP_TDX_AUTH was on: the quote was only parsed, so `tcb_status` is
    None and nothing about the platform is known. `rtmr3` is the quote's RTMR3 (None only for
    records stored before the registry kept it). `tcb_grace_until` is the end of the TCB grace
    (`--tcb-grace-days`) when the status was accepted only thanks to it. `refused` is set only
    by a re-appraisal that found the stored quote no longer accepted: the refusal's
    `"<step>: <reason>"`, with the refused `tcb_status` and `advisory_ids` when the policy
    named them (else None and ()).
    """

    tcb_status: str | None
    advisory_ids: tuple[str, ...]
    mr_td: bytes
    verified_at: datetime
    skipped: bool
    rtmr3: bytes | None = None
    tcb_grace_until: datetime | None = None
    refused: str | None = None

    def same_appraisal(self, other: Verdict) -> bool:
        """True when `other` concludes the same about the platform (status, advisories, grace,
        refusal, skipped), whenever it was reached."""
        return (
            self.tcb_status,
            self.advisory_ids,
            self.tcb_grace_until,
            self.refused,
            self.skipped,
        ) == (
            other.tcb_status,
            other.advisory_ids,
            other.tcb_grace_until,
            other.refused,
            other.skipped,
        )


@dataclass(frozen=True)
class PastVerdict:
    """A verdict a later one replaced (`InstanceRecord.verdict_history`): what it concluded,
    when it was reached and when it was replaced."""

    tcb_status: str | None
    advisory_ids: tuple[str, ...]
    tcb_grace_until: datetime | None
    refused: str | None
    skipped: bool
    verified_at: datetime
    replaced_at: datetime

    @classmethod
    def of(cls, verdict: Verdict, *, replaced_at: datetime) -> PastVerdict:
        return cls(
            tcb_status=verdict.tcb_status,
            advisory_ids=verdict.advisory_ids,
            tcb_grace_until=verdict.tcb_grace_until,
            refused=verdict.refused,
            skipped=verdict.skipped,
            verified_at=verdict.verified_at,
            replaced_at=replaced_at,
        )


@dataclass(frozen=True)
class InstanceRecord:
    """A registered instance: its binding (pubkey, PPID, identities), the quote and its verdict.

    `event_log` is the RTMR3 event log (canonical `EventLog.to_json()` text) that replayed to
    this quote's RTMR3, or None when the registration came without one; `workload` is that log's
    latest workload event (None without a log or before the first configure), recorded with it
    so that reading a record never parses a log; `ssh_host_key` is that log's latest measured
    SSH host key line (None without one), stored likewise; `event_log_history` holds the logs
    it replaced, oldest first (bounded, see `registration.EVENT_LOG_HISTORY_LIMIT`);
    `verdict_history` the verdicts replaced by a different one, oldest first (bounded, see
    `VERDICT_HISTORY_LIMIT`).

    `binding_version` is 2 when the quote's report_data covered a registry challenge
    (`challenge`, the nonce) and `proof_of_possession` is the instance key's signature over it;
    1 (both None) for a v1 registration, accepted only in compatibility mode.
    """

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    verdict: Verdict
    registered_at: datetime
    updated_at: datetime
    event_log: str | None = None
    workload: WorkloadEvent | None = None
    ssh_host_key: str | None = None
    event_log_history: tuple[str, ...] = ()
    binding_version: int = 1
    challenge: bytes | None = None
    proof_of_possession: bytes | None = None
    log_index: int | None = None
    """The index of the instance's latest leaf in the registry's log (`log_leaf`); None only
    for a record not stored yet, or stored before the log and not yet appended."""

    verdict_history: tuple[PastVerdict, ...] = ()
    ccel: bytes | None = None
    """The firmware's CCEL event log (without its padding) that replayed to this quote's
    RTMR0-2, or None when the registration came without one (`ccel_check`)."""
    ccel_summary: str | None = None
    """That log's event count and measured boot components, canonical JSON text
    (`{"components": ..., "events": N}`), stored with it so that reading a record parses no log."""

    def with_verdict(self, verdict: Verdict, *, now: datetime) -> InstanceRecord:
        """This record with `verdict`, the current one pushed into the history when `verdict`
        concludes differently (the last `VERDICT_HISTORY_LIMIT` kept)."""
        history = self.verdict_history
        if not self.verdict.same_appraisal(verdict):
            history = (*history, PastVerdict.of(self.verdict, replaced_at=now))
            history = history[-VERDICT_HISTORY_LIMIT:]
        return replace(self, verdict=verdict, verdict_history=history)
