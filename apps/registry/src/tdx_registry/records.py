"""The values the registry stores and serves: one instance record with its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tdx_report_data import IdentityInfo


@dataclass(frozen=True)
class Verdict:
    """What quote verification concluded, kept with the record.

    `skipped` is True when SKIP_TDX_AUTH was on: the quote was only parsed, so `tcb_status` is
    None and nothing about the platform is known.
    """

    tcb_status: str | None
    advisory_ids: tuple[str, ...]
    mr_td: bytes
    verified_at: datetime
    skipped: bool


@dataclass(frozen=True)
class InstanceRecord:
    """A registered instance: its binding (pubkey, PPID, identities), the quote and its verdict."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    verdict: Verdict
    registered_at: datetime
    updated_at: datetime
