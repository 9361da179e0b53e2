"""What a caller accepts once a quote has verified: a value, passed in, never global, and its
evaluation (step 8 of the verification)."""

from __future__ import annotations

from dataclasses import dataclass

from tdx_quote import TdReport10, TdReport15
from tdx_verify._errors import (
    DebugTdRejected,
    MeasurementRejected,
    TcbStatusRejected,
    TdAttributesRejected,
)

DEFAULT_ACCEPTED_TCB_STATUSES: frozenset[str] = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)

# TD attribute bits (TDX module ABI): 0 DEBUG, 28 SEPT_VE_DISABLE, 29 MIGRATABLE, and the
# feature bits a production TD may set; every other bit is reserved. The accepted set is the
# one dcap-qvl 0.7 accepts, so both verifiers agree on every TD.
_DEBUG = 1 << 0
_SEPT_VE_DISABLE = 1 << 28
_MIGRATABLE = 1 << 29
_FEATURES = sum(1 << b for b in (16, 18, 19, 20, 21, 22, 27, 28, 30, 31, 62, 63))
_RESERVED = ((1 << 64) - 1) & ~(_DEBUG | _MIGRATABLE | _FEATURES)


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

    def check(self, report: TdReport10, tcb_status: str, advisory_ids: tuple[str, ...]) -> None:
        """Step 8: the merged TCB status, the TD attributes and the measurements of `report`
        against this policy; raise the `PolicyError` that names the first refusal."""
        accepted = self.accepted_tcb_statuses
        if tcb_status == "Revoked" or (accepted is not None and tcb_status not in accepted):
            raise TcbStatusRejected(
                "policy",
                f"TCB status {tcb_status} is not accepted"
                + (f" (advisories: {', '.join(advisory_ids)})" if advisory_ids else ""),
                tcb_status=tcb_status,
                advisory_ids=advisory_ids,
            )
        attributes = int.from_bytes(report.td_attributes, "little")
        if attributes & _DEBUG and not self.allow_debug:
            raise DebugTdRejected(
                "policy", f"the TD runs in debug mode (TD attributes {report.td_attributes.hex()})"
            )
        if attributes & _RESERVED:
            raise TdAttributesRejected(
                "policy", f"reserved TD attribute bits are set ({report.td_attributes.hex()})"
            )
        if attributes & _MIGRATABLE:
            raise TdAttributesRejected("policy", "the TD is migratable (TD attribute bit 29)")
        if self.require_sept_ve_disable and not attributes & _SEPT_VE_DISABLE:
            raise TdAttributesRejected("policy", "SEPT_VE_DISABLE is not set in the TD attributes")
        if isinstance(report, TdReport15) and any(report.mr_service_td):
            raise MeasurementRejected(
                "policy", "MR_SERVICE_TD is set: service TDs are not supported"
            )
        if self.mrtd_allowlist is not None and report.mr_td not in self.mrtd_allowlist:
            raise MeasurementRejected(
                "policy", f"MRTD {report.mr_td.hex()} is not in the allow-list"
            )
        if self.rtmr_allowlist is not None:
            for index, allowed in enumerate(self.rtmr_allowlist):
                value = report.rtmrs[index]
                if allowed is not None and value not in allowed:
                    raise MeasurementRejected(
                        "policy", f"RTMR{index} {value.hex()} is not in the allow-list"
                    )
