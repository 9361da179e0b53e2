"""Typed TCB info (v3, TDX) and QE identity, and Intel's TCB level matching rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tdx_verify._errors import CollateralFormatError, QeIdentityError, TcbLevelError

KNOWN_TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
# The statuses Intel gives a QE identity or TDX module identity level (dcap-qvl refuses the
# others in a TDX module identity; tdx-verify refuses them in both).
MODULE_TCB_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_components: tuple[int, ...]  # 16
    pce_svn: int
    tdx_components: tuple[int, ...]  # 16
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: float | None  # for the TCB grace: None when not an RFC 3339 date in 1970-9000
    tcb_date_valid: bool = True  # an RFC 3339 date from 1970 on (what dcap-qvl requires)


@dataclass(frozen=True, slots=True)
class ModuleLevel:
    isv_svn: int
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: float | None
    tcb_date_valid: bool = True


@dataclass(frozen=True, slots=True)
class TdxModule:
    mr_signer: bytes  # 48
    attributes: bytes  # 8
    attributes_mask: bytes  # 8
    levels: tuple[ModuleLevel, ...]  # empty for the top-level `tdxModule`


@dataclass(frozen=True, slots=True)
class TcbInfo:
    issue_date: float
    next_update: float
    fmspc: bytes
    pce_id: bytes
    tdx_module: TdxModule
    module_identities: dict[str, TdxModule]
    levels: tuple[TcbLevel, ...]
    evaluation_data_number: int | None  # tcbEvaluationDataNumber


@dataclass(frozen=True, slots=True)
class QeIdentity:
    issue_date: float
    next_update: float
    miscselect: int
    miscselect_mask: int
    attributes: bytes  # 16
    attributes_mask: bytes  # 16
    mr_signer: bytes  # 32
    isv_prod_id: int
    levels: tuple[ModuleLevel, ...]
    evaluation_data_number: int | None


_EARLIEST_TCB_DATE = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
_LATEST_TCB_DATE = datetime(9000, 1, 1, tzinfo=UTC).timestamp()

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def rfc3339_timestamp(text: str) -> float | None:
    """The POSIX time of an RFC 3339 date-time (section 5.6: `T`, `t` or a space between date
    and time, `Z`, `z` or a numeric offset, optional fraction, second 60 for a leap second),
    as dcap-qvl reads Intel's dates; None when `text` is not one or is before 1970."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    leap = second == 60
    if m.group(8) is None:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            return None
        sign = 1 if m.group(9) == "+" else -1
        offset = sign * (off_h * 3600 + off_m * 60)
    else:
        offset = 0
    try:
        when = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=UTC)
    except ValueError:
        return None
    stamp = when.timestamp() + (1 if leap else 0) - offset
    if m.group(7):
        stamp += float("0" + m.group(7))
    return stamp if stamp >= _EARLIEST_TCB_DATE else None


class _Reader:
    """Typed access to a JSON object that raises CollateralFormatError naming the field."""

    def __init__(self, step: str, obj: Any, path: str) -> None:
        if not isinstance(obj, dict):
            raise CollateralFormatError(step, f"{path} is not a JSON object")
        self.step, self.obj, self.path = step, obj, path

    def _get(self, key: str) -> Any:
        if key not in self.obj:
            raise CollateralFormatError(self.step, f"{self.path}.{key} is missing")
        return self.obj[key]

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
            raise CollateralFormatError(self.step, f"{self.path}.{key} is not a u32")
        return value

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise CollateralFormatError(self.step, f"{self.path}.{key} is not a string")
        return value

    def hexbytes(self, key: str, length: int) -> bytes:
        try:
            value = bytes.fromhex(self.string(key))
        except ValueError:
            raise CollateralFormatError(self.step, f"{self.path}.{key} is not hex") from None
        if len(value) != length:
            raise CollateralFormatError(self.step, f"{self.path}.{key} is not {length} bytes")
        return value

    def timestamp(self, key: str) -> float:
        stamp = rfc3339_timestamp(self.string(key))
        if stamp is None:
            raise CollateralFormatError(
                self.step, f"{self.path}.{key} is not an RFC 3339 date from 1970 on"
            )
        return stamp

    def tcb_date(self) -> tuple[float | None, bool]:
        """A level's `tcbDate` (a string, required, as dcap-qvl requires it): its time for the
        TCB grace (None when unreadable or past 9000: a datetime cannot be moved by a grace
        there), and whether it is an RFC 3339 date from 1970 on, which dcap-qvl requires of the
        level it matches (`check_matched_date`)."""
        stamp = rfc3339_timestamp(self.string("tcbDate"))
        if stamp is None:
            return None, False
        return (stamp if stamp <= _LATEST_TCB_DATE else None), True

    def status(self, key: str, known: frozenset[str] = KNOWN_TCB_STATUSES) -> str:
        value = self.string(key)
        if value not in known:
            raise CollateralFormatError(self.step, f"{self.path}.{key} {value!r} is unknown")
        return value

    def advisories(self) -> tuple[str, ...]:
        value = self.obj.get("advisoryIDs", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CollateralFormatError(self.step, f"{self.path}.advisoryIDs is not a string list")
        return tuple(value)

    def array(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise CollateralFormatError(self.step, f"{self.path}.{key} is not a list")
        return value

    def child(self, key: str) -> _Reader:
        return _Reader(self.step, self._get(key), f"{self.path}.{key}")


def _load(step: str, text: str, what: str) -> _Reader:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise CollateralFormatError(step, f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CollateralFormatError(step, f"{what} is not valid JSON: nested too deeply") from None
    return _Reader(step, obj, what)


def _components(r: _Reader, key: str) -> tuple[int, ...]:
    comps = r.array(key)
    if len(comps) != 16:
        raise CollateralFormatError(r.step, f"{r.path}.{key} does not have 16 components")
    out = []
    for i, comp in enumerate(comps):
        svn = _Reader(r.step, comp, f"{r.path}.{key}[{i}]").integer("svn")
        if svn > 255:
            raise CollateralFormatError(r.step, f"{r.path}.{key}[{i}].svn is not a byte")
        out.append(svn)
    return tuple(out)


def _module_levels(r: _Reader) -> tuple[ModuleLevel, ...]:
    """The levels of a QE identity or TDX module identity: statuses UpToDate, OutOfDate or
    Revoked only (`MODULE_TCB_STATUSES`), a `tcbDate` string each."""
    levels = []
    for i, raw in enumerate(r.array("tcbLevels")):
        lv = _Reader(r.step, raw, f"{r.path}.tcbLevels[{i}]")
        tcb_date, tcb_date_valid = lv.tcb_date()
        levels.append(
            ModuleLevel(
                isv_svn=lv.child("tcb").integer("isvsvn"),
                status=lv.status("tcbStatus", MODULE_TCB_STATUSES),
                advisory_ids=lv.advisories(),
                tcb_date=tcb_date,
                tcb_date_valid=tcb_date_valid,
            )
        )
    return tuple(levels)


def _level_order(level: TcbLevel) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """Intel's order of TCB levels (its QVL keeps them in a set, highest first): SGX
    components, then PCESVN, then TDX components, each compared in order."""
    return level.sgx_components, level.pce_svn, level.tdx_components


def _tdx_module(r: _Reader, with_levels: bool) -> TdxModule:
    return TdxModule(
        mr_signer=r.hexbytes("mrsigner", 48),
        attributes=r.hexbytes("attributes", 8),
        attributes_mask=r.hexbytes("attributesMask", 8),
        levels=_module_levels(r) if with_levels else (),
    )


def parse_tcb_info(text: str) -> TcbInfo:
    """Parse a TDX TCB info (id "TDX", version 3); anything else is refused."""
    r = _load("tcb_info", text, "tcbInfo")
    if r.string("id") != "TDX":
        raise CollateralFormatError("tcb_info", f"id is {r.string('id')!r}, expected 'TDX'")
    if r.integer("version") != 3:
        raise CollateralFormatError("tcb_info", f"version is {r.integer('version')}, expected 3")
    r.integer("tcbType")  # required (dcap-qvl refuses TCB info without it); not interpreted
    identities: dict[str, TdxModule] = {}
    if "tdxModuleIdentities" in r.obj:
        for i, raw in enumerate(r.array("tdxModuleIdentities")):
            ident = _Reader(r.step, raw, f"tcbInfo.tdxModuleIdentities[{i}]")
            # Matched case-insensitively, as dcap-qvl does; the first of equal names wins.
            identities.setdefault(ident.string("id").upper(), _tdx_module(ident, True))
    levels = []
    for i, raw in enumerate(r.array("tcbLevels")):
        lv = _Reader(r.step, raw, f"tcbInfo.tcbLevels[{i}]")
        tcb = lv.child("tcb")
        tcb_date, tcb_date_valid = lv.tcb_date()
        levels.append(
            TcbLevel(
                sgx_components=_components(tcb, "sgxtcbcomponents"),
                pce_svn=tcb.integer("pcesvn"),
                tdx_components=_components(tcb, "tdxtcbcomponents"),
                status=lv.status("tcbStatus"),
                advisory_ids=lv.advisories(),
                tcb_date=tcb_date,
                tcb_date_valid=tcb_date_valid,
            )
        )
    if not levels:
        raise CollateralFormatError("tcb_info", "tcbInfo.tcbLevels is empty")
    # Highest first in Intel's order, whatever the order of the JSON (a stable sort: of levels
    # equal in every SVN the first listed is matched first).
    levels.sort(key=_level_order, reverse=True)
    return TcbInfo(
        issue_date=r.timestamp("issueDate"),
        next_update=r.timestamp("nextUpdate"),
        fmspc=r.hexbytes("fmspc", 6),
        pce_id=r.hexbytes("pceId", 2),
        tdx_module=_tdx_module(r.child("tdxModule"), with_levels=False),
        module_identities=identities,
        levels=tuple(levels),
        evaluation_data_number=r.integer("tcbEvaluationDataNumber"),
    )


def parse_qe_identity(text: str) -> QeIdentity:
    """Parse the TD quoting enclave identity (id "TD_QE", version 2 or 3)."""
    r = _load("qe_identity", text, "enclaveIdentity")
    if r.string("id") != "TD_QE":
        raise CollateralFormatError("qe_identity", f"id is {r.string('id')!r}, expected 'TD_QE'")
    if r.integer("version") not in (2, 3):
        raise CollateralFormatError("qe_identity", f"version {r.integer('version')} is unsupported")
    levels = _module_levels(r)
    if not levels:
        raise CollateralFormatError("qe_identity", "enclaveIdentity.tcbLevels is empty")
    return QeIdentity(
        issue_date=r.timestamp("issueDate"),
        next_update=r.timestamp("nextUpdate"),
        miscselect=int.from_bytes(r.hexbytes("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(r.hexbytes("miscselectMask", 4), "little"),
        attributes=r.hexbytes("attributes", 16),
        attributes_mask=r.hexbytes("attributesMask", 16),
        mr_signer=r.hexbytes("mrsigner", 32),
        isv_prod_id=r.integer("isvprodid"),
        levels=levels,
        evaluation_data_number=r.integer("tcbEvaluationDataNumber"),
    )


def masked_equal(value: bytes, expected: bytes, mask: bytes) -> bool:
    """value & mask == expected & mask, bytewise."""
    return all((v & m) == (e & m) for v, e, m in zip(value, expected, mask, strict=True))


def match_qe_level(identity: QeIdentity, isv_svn: int) -> ModuleLevel:
    """The first QE identity level whose ISVSVN the QE report reaches."""
    for level in identity.levels:
        if isv_svn >= level.isv_svn:
            return level
    raise QeIdentityError(
        "qe_identity",
        f"QE ISVSVN {isv_svn} is below every level of the QE identity "
        f"(lowest {identity.levels[-1].isv_svn})",
    )


def match_platform_level(
    info: TcbInfo, sgx_svns: tuple[int, ...], pce_svn: int, tee_tcb_svn: bytes
) -> TcbLevel:
    """The first TCB level (in Intel's order, highest first) that every SGX component, the
    PCESVN and the TDX components reach. With a TDX module of major version 1 or more
    (tee_tcb_svn[1]), the module's own two bytes are judged by its identity's levels
    (`match_tdx_module`), not here: only TDX components 2-15 are compared, as Intel's QVL and
    dcap-qvl do. Its `tcbDate` must be an RFC 3339 date (`check_matched_date`)."""
    first_tdx = 2 if tee_tcb_svn[1] > 0 else 0
    for level in info.levels:
        if pce_svn < level.pce_svn:
            continue
        if any(a < b for a, b in zip(sgx_svns, level.sgx_components, strict=True)):
            continue
        pairs = zip(tee_tcb_svn[first_tdx:], level.tdx_components[first_tdx:], strict=True)
        if any(a < b for a, b in pairs):
            continue
        check_matched_date(level, "the matched TCB level")
        return level
    raise TcbLevelError(
        "tcb_level",
        f"no TCB level of FMSPC {info.fmspc.hex().upper()} matches the platform "
        f"(SGX SVNs {list(sgx_svns)}, PCESVN {pce_svn}, TEE TCB SVN {tee_tcb_svn.hex()})",
    )


def tdx_module_of(info: TcbInfo, tee_tcb_svn: bytes) -> tuple[str, TdxModule]:
    """The TDX module entry of `info` that applies to a module of this TEE TCB SVN, and its name
    (see `match_tdx_module`)."""
    version = tee_tcb_svn[1]
    if version == 0:
        return "tdxModule", info.tdx_module
    name = f"TDX_{version:02X}"
    found = info.module_identities.get(name)
    if found is None:
        raise TcbLevelError("tcb_level", f"TCB info has no TDX module identity {name}")
    return name, found


def check_matched_date(level: TcbLevel | ModuleLevel, what: str) -> None:
    """dcap-qvl reads the tcbDate of the TCB level and the TDX module level it matches, and
    refuses the collateral when it is not an RFC 3339 date from 1970 on: so do we."""
    if not level.tcb_date_valid:
        raise CollateralFormatError(
            "tcb_level", f"the tcbDate of {what} is not an RFC 3339 date from 1970 on"
        )


def match_tdx_module(
    info: TcbInfo, tee_tcb_svn: bytes, mr_signer_seam: bytes, seam_attributes: bytes
) -> ModuleLevel | None:
    """Check the TDX module's signer and attributes; its TCB level when the TCB info has one.

    Module major version (tee_tcb_svn[1]) 0: the top-level `tdxModule` applies and carries no
    level. Otherwise identity "TDX_%02X" (the version in hex, matched case-insensitively, as
    Intel's QVL and dcap-qvl name it) must exist and tee_tcb_svn[0] (the module's ISVSVN) must
    reach one of its levels, whose tcbDate must be an RFC 3339 date.
    """
    name, module = tdx_module_of(info, tee_tcb_svn)
    if mr_signer_seam != module.mr_signer:
        raise TcbLevelError(
            "tcb_level", f"MRSIGNER_SEAM {mr_signer_seam.hex()} does not match {name}"
        )
    if not masked_equal(seam_attributes, module.attributes, module.attributes_mask):
        raise TcbLevelError(
            "tcb_level", f"SEAM attributes {seam_attributes.hex()} do not match {name}"
        )
    if not module.levels:
        return None
    for level in module.levels:
        if tee_tcb_svn[0] >= level.isv_svn:
            check_matched_date(level, f"the matched level of {name}")
            return level
    raise TcbLevelError(
        "tcb_level", f"TDX module ISVSVN {tee_tcb_svn[0]} is below every level of {name}"
    )


OUT_OF_DATE_STATUSES = frozenset({"OutOfDate", "OutOfDateConfigurationNeeded"})

# A platform level's status without its out-of-date part.
_WITHOUT_OUT_OF_DATE = {
    "OutOfDate": "UpToDate",
    "OutOfDateConfigurationNeeded": "ConfigurationNeeded",
}


def status_without_out_of_date(platform: str, others: tuple[str, ...]) -> str:
    """The merged status the platform would have if none of its components were out of date:
    the platform level's status without its out-of-date part, converged with the statuses of
    the QE and TDX module levels that are not out of date (an out-of-date one counts as
    up to date). What the TCB grace judges: an out-of-date QE or module must not turn a
    `SWHardeningNeeded` platform into a graced `UpToDate`."""
    status = _WITHOUT_OUT_OF_DATE.get(platform, platform)
    for other in others:
        if other not in OUT_OF_DATE_STATUSES:
            status = converge(status, other)
    return status


def out_of_date_since(
    levels: tuple[TcbLevel, ...] | tuple[ModuleLevel, ...], matched: TcbLevel | ModuleLevel
) -> float | None:
    """When a newer TCB first put a component matched at `matched` out of date: the tcbDate of
    the oldest level listed above it (levels are newest first). None when no level is above it
    or one of those has no tcbDate: nothing then says since when."""
    index = next(i for i, level in enumerate(levels) if level is matched)
    dates = [level.tcb_date for level in levels[:index]]
    if not dates or any(date is None for date in dates):
        return None
    return min(date for date in dates if date is not None)


_SEVERITY = {
    "UpToDate": 0,
    "SWHardeningNeeded": 1,
    "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3,
    "OutOfDate": 4,
    "OutOfDateConfigurationNeeded": 5,
    "Revoked": 6,
}


def converge(platform: str, other: str) -> str:
    """Intel's convergence of the platform TCB status with a QE or TDX module status.

    An out-of-date QE/module makes an up-to-date platform OutOfDate and a platform that needs
    configuration OutOfDateConfigurationNeeded; a revoked one revokes; otherwise the worse wins.
    """
    if other == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return other if _SEVERITY[other] > _SEVERITY[platform] else platform


def merge_advisories(*groups: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        for advisory in group:
            if advisory not in out:
                out.append(advisory)
    return tuple(out)
