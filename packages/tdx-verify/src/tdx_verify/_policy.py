"""What a caller accepts once a quote has verified: a value, passed in, never global."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ACCEPTED_TCB_STATUSES: frozenset[str] = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)


@dataclass(frozen=True)
class Policy:
    """Acceptance rules applied after every cryptographic check has passed.

    `accepted_tcb_statuses=None` accepts any status except `Revoked`, which is never accepted.
    `rtmr_allowlist[i]` restricts RTMR i (None at an index: any value).
    `require_sept_ve_disable` refuses TDs that can receive #VE on EPT violations (dcap-qvl and
    Intel's appraisal policy do the same).
    """

    accepted_tcb_statuses: frozenset[str] | None = DEFAULT_ACCEPTED_TCB_STATUSES
    allow_debug: bool = False
    mrtd_allowlist: frozenset[bytes] | None = None
    rtmr_allowlist: tuple[frozenset[bytes] | None, ...] | None = None
    require_sept_ve_disable: bool = True

    def __post_init__(self) -> None:
        if self.rtmr_allowlist is not None and len(self.rtmr_allowlist) > 4:
            raise ValueError("rtmr_allowlist has at most 4 entries (RTMR0..RTMR3)")
