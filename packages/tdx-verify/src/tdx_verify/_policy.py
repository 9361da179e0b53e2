"""What a caller accepts once a quote has verified: a value, passed in, never global, and its
evaluation (step 8 of the verification)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tdx_quote import TdReport10, TdReport15
from tdx_verify._allowlist import check_advisory_ids, check_tcb_grace_days
from tdx_verify._errors import (
    AdvisoryDenied,
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

# Within the TCB grace, an out-of-date status is judged as the status it would have without the
# out-of-date part.
_GRACE_STATUS = {"OutOfDate": "UpToDate", "OutOfDateConfigurationNeeded": "ConfigurationNeeded"}
_WITHIN_GRACE = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Policy:
    """Acceptance rules applied after every cryptographic check has passed.

    `accepted_tcb_statuses=None` accepts any status except `Revoked`, which is never accepted.
    `rtmr_allowlist[i]` restricts RTMR i (None at an index: any value).
    `require_sept_ve_disable` refuses TDs that can receive #VE on EPT violations (dcap-qvl and
    Intel's appraisal policy do the same).
    `tcb_grace_days` (1..365, None: no grace) judges an `OutOfDate` or
    `OutOfDateConfigurationNeeded` status as the status without its out-of-date parts
    (`status_within_grace`; by default `UpToDate`, `ConfigurationNeeded`) while the newer TCB
    level that put the platform out of date is less than that many days old (by its tcbDate) at
    `now`; never `Revoked`. `denied_advisory_ids` refuses any verdict naming one of them
    (`AdvisoryDenied`).
    """

    accepted_tcb_statuses: frozenset[str] | None = DEFAULT_ACCEPTED_TCB_STATUSES
    allow_debug: bool = False
    mrtd_allowlist: frozenset[bytes] | None = None
    rtmr_allowlist: tuple[frozenset[bytes] | None, ...] | None = None
    require_sept_ve_disable: bool = True
    tcb_grace_days: int | None = None
    denied_advisory_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.rtmr_allowlist is not None and len(self.rtmr_allowlist) > 4:
            raise ValueError("rtmr_allowlist has at most 4 entries (RTMR0..RTMR3)")
        if self.tcb_grace_days is not None:
            check_tcb_grace_days(self.tcb_grace_days)
        if not isinstance(self.denied_advisory_ids, frozenset):
            raise TypeError("denied_advisory_ids must be a frozenset of advisory IDs")
        check_advisory_ids(self.denied_advisory_ids)

    def check(
        self,
        report: TdReport10,
        tcb_status: str,
        advisory_ids: tuple[str, ...],
        *,
        out_of_date_since: datetime | None = None,
        status_within_grace: str | None = None,
        now: datetime | None = None,
    ) -> datetime | None:
        """Step 8: the merged TCB status, the advisories, the TD attributes and the
        measurements of `report` against this policy; raise the `PolicyError` that names the
        first refusal. `out_of_date_since` (the tcbDate of the level that put the platform out
        of date), `status_within_grace` (the status without its out-of-date parts, as
        `VerifiedQuote.tcb_status_within_grace` gives it; None: `OutOfDate` is judged as
        `UpToDate`, `OutOfDateConfigurationNeeded` as `ConfigurationNeeded`) and `now` are what
        the TCB grace reads; returns the end of the grace when the status was accepted only
        thanks to it, else None."""
        for name, moment in (("now", now), ("out_of_date_since", out_of_date_since)):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be a timezone-aware datetime")
        if status_within_grace is not None and status_within_grace not in _WITHIN_GRACE:
            raise ValueError(
                f"status_within_grace {status_within_grace!r} is not a status without an "
                "out-of-date part"
            )
        grace_until = self._check_tcb_status(
            tcb_status, advisory_ids, out_of_date_since, status_within_grace, now
        )
        denied = tuple(a for a in advisory_ids if a in self.denied_advisory_ids)
        if denied:
            raise AdvisoryDenied(
                "policy",
                f"the TCB (status {tcb_status}) is affected by denied advisories: "
                + ", ".join(denied),
                tcb_status=tcb_status,
                advisory_ids=advisory_ids,
                denied=denied,
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

        return grace_until

    def _check_tcb_status(
        self,
        tcb_status: str,
        advisory_ids: tuple[str, ...],
        out_of_date_since: datetime | None,
        status_within_grace: str | None,
        now: datetime | None,
    ) -> datetime | None:
        accepted = self.accepted_tcb_statuses
        if tcb_status != "Revoked" and (accepted is None or tcb_status in accepted):
            return None
        why = ""
        graced = _GRACE_STATUS.get(tcb_status)
        if graced is not None and status_within_grace is not None:
            graced = status_within_grace
        days = self.tcb_grace_days
        if days is not None and graced is not None and accepted is not None:
            if graced not in accepted:
                why = f"; without its out-of-date part it is {graced}, which is not accepted"
            elif out_of_date_since is None or now is None:
                why = f"; no tcbDate says since when it is out of date, so no {days}-day grace"
            else:
                until = out_of_date_since + timedelta(days=days)
                if now < until:
                    return until
                why = (
                    f"; out of date since {_iso(out_of_date_since)}, its {days}-day grace ended "
                    f"at {_iso(until)}"
                )
        raise TcbStatusRejected(
            "policy",
            f"TCB status {tcb_status} is not accepted"
            + (f" (advisories: {', '.join(advisory_ids)})" if advisory_ids else "")
            + why,
            tcb_status=tcb_status,
            advisory_ids=advisory_ids,
        )
