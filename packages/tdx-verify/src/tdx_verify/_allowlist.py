"""The TD image allow-lists of a service's settings: MRTD values and RTMR0-2 values as given on
a command line (`--mrtd-allowlist HEX[,HEX...]`, `--rtmr-allowlist INDEX=HEX[,INDEX=HEX...]`)
or in an environment variable (the same comma-separated text), parsed into the shapes of
`Policy.mrtd_allowlist` and `Policy.rtmr_allowlist`.

The registry and the key broker both parse their allow-lists here, so both accept exactly the
same text and refuse to start, naming what is missing, when nobody pinned the TD image.

The TCB settings of `Policy` are parsed here the same way: `--tcb-grace-days N` into
`Policy.tcb_grace_days` and `--deny-advisory ID` (repeatable, or comma-separated) into
`Policy.denied_advisory_ids`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tdx_verify._errors import TdxVerifyError

MEASUREMENT_LEN = 48
"""Bytes of an MRTD or an RTMR (SHA-384)."""

PINNED_RTMRS = (0, 1, 2)
"""The RTMRs a TD image allow-list pins (RTMR3 is the run-time event log's)."""

MAX_TCB_GRACE_DAYS = 365
"""The longest TCB grace a policy may give (a year): past it an out-of-date TCB is refused."""

ADVISORY_ID = re.compile(r"INTEL-SA-[0-9]{5}")
"""The shape of the advisory IDs of Intel's TCB info and QE identity (`INTEL-SA-00837`)."""

_HEX_48 = re.compile(r"[0-9a-fA-F]{96}")
_DAYS = re.compile(r"[0-9]{1,4}")


class AllowlistError(TdxVerifyError, ValueError):
    """An allow-list item that does not parse, or a TD image nobody pinned; `reason` names the
    flag and the item."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolicySettingError(AllowlistError):
    """A TCB grace or advisory deny-list setting that does not parse or is out of range; an
    `AllowlistError`, so services refuse it at start-up like a bad allow-list."""


def split_items(values: Iterable[str]) -> list[str]:
    """Every comma-separated item of `values` (repeated flags, an environment value), stripped,
    empty items dropped."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _measurement(flag: str, item: str) -> bytes:
    if _HEX_48.fullmatch(item) is None:
        raise AllowlistError(f"{flag}: {item!r} is not {MEASUREMENT_LEN} bytes of hex")
    return bytes.fromhex(item)


def parse_mrtd_allowlist(
    values: Iterable[str], *, flag: str = "--mrtd-allowlist"
) -> frozenset[bytes] | None:
    """`HEX[,HEX...]` texts into the allowed MRTDs; None when they name none."""
    items = split_items(values)
    if not items:
        return None
    return frozenset(_measurement(flag, item) for item in items)


def parse_rtmr_allowlist(
    values: Iterable[str], *, flag: str = "--rtmr-allowlist"
) -> tuple[frozenset[bytes] | None, ...] | None:
    """`INDEX=HEX[,INDEX=HEX...]` texts into the allowed values of RTMR0-2 (None at an index
    none names; several values of one index are alternatives); None when they name none."""
    items = split_items(values)
    if not items:
        return None
    allowed: list[set[bytes]] = [set() for _ in PINNED_RTMRS]
    for item in items:
        index, sep, value = item.partition("=")
        if not sep or index.strip() not in ("0", "1", "2"):
            raise AllowlistError(f"{flag}: {item!r} is not INDEX=HEX with INDEX 0, 1 or 2")
        allowed[int(index)].add(_measurement(flag, value.strip()))
    return tuple(frozenset(values) if values else None for values in allowed)


def missing_td_image_pins(
    mrtd_allowlist: frozenset[bytes] | None,
    rtmr_allowlist: tuple[frozenset[bytes] | None, ...] | None,
    *,
    mrtd_flag: str = "--mrtd-allowlist",
    rtmr_flag: str = "--rtmr-allowlist",
) -> list[str]:
    """The flags still to give so that the MRTD and each of RTMR0-2 is pinned (empty: all)."""
    missing = [] if mrtd_allowlist is not None else [mrtd_flag]
    rtmrs = rtmr_allowlist or (None,) * len(PINNED_RTMRS)
    missing += [f"{rtmr_flag} {i}=HEX" for i in PINNED_RTMRS if i >= len(rtmrs) or rtmrs[i] is None]
    return missing


def require_td_image_pins(
    mrtd_allowlist: frozenset[bytes] | None,
    rtmr_allowlist: tuple[frozenset[bytes] | None, ...] | None,
) -> None:
    """Refuse (`AllowlistError`) a TD image whose MRTD or one of RTMR0-2 nobody pinned; the
    reason names each missing flag and the way out (`--any-measurement`)."""
    missing = missing_td_image_pins(mrtd_allowlist, rtmr_allowlist)
    if missing:
        raise AllowlistError(
            "no measurement policy for the TD image: give "
            + ", ".join(missing)
            + " (the values your TD image measures), or --any-measurement to accept any TD "
            "image (development)"
        )


def check_tcb_grace_days(days: object, *, flag: str = "tcb_grace_days") -> None:
    """Refuse (`PolicySettingError`) a grace that is not a whole number of days in
    1..`MAX_TCB_GRACE_DAYS`."""
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_TCB_GRACE_DAYS:
        raise PolicySettingError(
            f"{flag}: {days!r} is not a number of days from 1 to {MAX_TCB_GRACE_DAYS}"
        )


def check_advisory_ids(ids: Iterable[object], *, flag: str = "denied_advisory_ids") -> None:
    """Refuse (`PolicySettingError`) an advisory ID not shaped like Intel's `INTEL-SA-NNNNN`."""
    for item in ids:
        if not isinstance(item, str) or ADVISORY_ID.fullmatch(item) is None:
            raise PolicySettingError(f"{flag}: {item!r} is not an advisory ID like INTEL-SA-00837")


def parse_tcb_grace_days(value: str | None, *, flag: str = "--tcb-grace-days") -> int | None:
    """`N` (days, 1..365) into `Policy.tcb_grace_days`; None (no grace) when absent or blank."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DAYS.fullmatch(text) is None:
        raise PolicySettingError(
            f"{flag}: {value!r} is not a number of days from 1 to {MAX_TCB_GRACE_DAYS}"
        )
    days = int(text)
    check_tcb_grace_days(days, flag=flag)
    return days


def parse_denied_advisories(
    values: Iterable[str], *, flag: str = "--deny-advisory"
) -> frozenset[str]:
    """`ID[,ID...]` texts (repeated flags, an environment value) into
    `Policy.denied_advisory_ids`; IDs are Intel's, `INTEL-SA-NNNNN` (case-insensitive here,
    kept upper-case as the TCB info writes them)."""
    items = [item.upper() for item in split_items(values)]
    check_advisory_ids(items, flag=flag)
    return frozenset(items)
