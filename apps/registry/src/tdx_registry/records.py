"""The values the registry stores and serves: one instance record with its verdict and its
RTMR3 event log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tdx_measure import WorkloadEvent
from tdx_report_data import IdentityInfo


@dataclass(frozen=True)
class Verdict:
    """What quote verification concluded, kept with the record.

    `skipped` is True when SKIP_TDX_AUTH was on: the quote was only parsed, so `tcb_status` is
    None and nothing about the platform is known. `rtmr3` is the quote's RTMR3 (None only for
    records stored before the registry kept it).
    """

    tcb_status: str | None
    advisory_ids: tuple[str, ...]
    mr_td: bytes
    verified_at: datetime
    skipped: bool
    rtmr3: bytes | None = None


@dataclass(frozen=True)
class InstanceRecord:
    """A registered instance: its binding (pubkey, PPID, identities), the quote and its verdict.

    `event_log` is the RTMR3 event log (canonical `EventLog.to_json()` text) that replayed to
    this quote's RTMR3, or None when the registration came without one; `workload` is that log's
    latest workload event (None without a log or before the first configure), recorded with it
    so that reading a record never parses a log; `ssh_host_key` is that log's latest measured
    SSH host key line (None without one), stored likewise; `event_log_history` holds the logs
    it replaced, oldest first (bounded, see `registration.EVENT_LOG_HISTORY_LIMIT`).

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
