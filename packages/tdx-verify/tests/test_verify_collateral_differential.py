"""Differential testing of collateral: tdx-verify against dcap-qvl 0.7 on mutated collateral.

A simulated platform (tdx-sim, one PKI for the module, a platform for each of four TCB statuses)
gives a quote and its collateral, and so does the tests' `World` (conftest: a test PKI, the real
Intel vector's TD report and its TCB info and QE identity, with two TDX module identities and
Intel's advisory lists), the "intel_layout" base. The hypothesis strategies of
`collateral_mutations` change the TCB info (levels, SVNs, dates, statuses, advisory IDs, module
identities, the signature and its chain), the QE identity, both CRLs and the issuer chains,
re-signing with the base's keys where the change is not to the signature itself. Both verifiers
then judge the same quote and collateral at the same time, trusting the base's root;
tdx-verify under a policy accepting every status (but Revoked).

They must agree: both refuse, or both accept with the same TCB status and advisory IDs. The only
differences allowed are those packages/tdx-verify/README.md lists as deliberately stricter,
each known here by what it changes and how tdx-verify refuses it (`KNOWN_STRICTER`); tdx-verify
accepting what dcap-qvl refuses is never allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from collateral_mutations import CHANGES, Change, Draft, Keys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verify_world import NOW as WORLD_NOW
from verify_world import World

from tdx_sim import SimOptions, SimPlatform
from tdx_verify import (
    Collateral,
    CollateralExpiredError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralSignatureError,
    Policy,
    RootCaError,
    VerificationError,
    Verifier,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
ANY_STATUS = Policy(accepted_tcb_statuses=None)
README = Path(__file__).resolve().parents[1] / "README.md"
BASE_STATUSES = ("UpToDate", "OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded")
INTEL_LAYOUT = "intel_layout"
BASES = (*BASE_STATUSES, INTEL_LAYOUT)

DIFFERENTIAL = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Base:
    """A quote, the draft of its valid collateral, the time they are judged at, and the root
    both verifiers trust (tdx-verify through `verifier`, shared so its caches stay warm)."""

    quote: bytes
    draft: Draft
    now: datetime
    root_der: bytes
    verifier: Verifier


def _base(quote: bytes, draft: Draft, root: x509.Certificate) -> Base:
    root_pem = root.public_bytes(Encoding.PEM)
    verifier = Verifier(root_ca_pem=root_pem, policy=ANY_STATUS)
    return Base(quote, draft, draft.now, root.public_bytes(Encoding.DER), verifier)


class SimWorld:
    """The bases by name (a plain class: a falsifying example names its changes and base, not
    the bytes of every quote and key, which hypothesis would print for a dataclass)."""

    def __init__(self, bases: dict[str, Base]) -> None:
        self.bases = bases

    def __repr__(self) -> str:
        return f"SimWorld(bases={sorted(self.bases)})"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, world: World) -> SimWorld:
    state_dir = tmp_path_factory.mktemp("sim-state")
    issued, next_update = NOW - timedelta(hours=1), NOW + timedelta(days=30)
    bases = {}
    for status in BASE_STATUSES:
        platform = SimPlatform(state_dir, SimOptions(tcb_status=status), now=NOW)
        keys = Keys.of_sim(platform.pki)
        tcb = platform.tcb_info(issued_at=issued, next_update=next_update)
        qe = platform.qe_identity(issued_at=issued, next_update=next_update)
        draft = Draft.of(keys, NOW, tcb, qe)
        bases[status] = _base(platform.quote(bytes(range(64))), draft, keys.root_cert)
    keys = Keys(
        world.root_key,
        world.root,
        world.pck_ca_key,
        world.pck_ca,
        world.tcb_key,
        world.tcb_signer,
        world.pck_leaf,
    )
    draft = Draft.of(keys, WORLD_NOW, world.tcb_info_dict(), world.qe_identity_dict())
    bases[INTEL_LAYOUT] = _base(world.quote(), draft, world.root)
    return SimWorld(bases)


@dataclass(frozen=True)
class Verdicts:
    ours: tuple[str, tuple[str, ...]] | VerificationError
    theirs: tuple[str, tuple[str, ...]] | str


def verdicts(base: Base, collateral: dict[str, str]) -> Verdicts:
    """Both verdicts. Anything tdx-verify raises that is not a VerificationError propagates and
    fails the test: every refusal must be one of the library's named errors."""
    text = json.dumps(collateral)
    ours: tuple[str, tuple[str, ...]] | VerificationError
    theirs: tuple[str, tuple[str, ...]] | str
    try:
        got = base.verifier.verify(base.quote, Collateral.from_json(text), now=base.now)
        ours = (got.tcb_status, got.advisory_ids)
    except VerificationError as exc:
        ours = exc
    try:
        report = dcap_qvl.verify_with_root_ca(
            base.quote,
            dcap_qvl.QuoteCollateralV3.from_json(text),
            base.root_der,
            int(base.now.timestamp()),
        )
        theirs = (report.status, tuple(report.advisory_ids))
    except ValueError as exc:
        theirs = str(exc)
    return Verdicts(ours, theirs)


# -- the differences the README lists, each known by its change and tdx-verify's refusal ---------


@dataclass(frozen=True)
class Known:
    """A deliberately stricter check: `readme` is the README's words for it; `applies` says
    whether the mutated draft has it and `refusal` whether tdx-verify's error is that check's."""

    readme: str
    applies: Callable[[Draft], bool]
    refusal: Callable[[VerificationError], bool]


def _crl_from_the_future(which: str) -> Callable[[Draft], bool]:
    return lambda d: (d.pck_crl if which == "pck_crl" else d.root_crl).this_update > timedelta(0)


def _pce_id_is_not_the_pck_certificates(d: Draft) -> bool:
    return d.tcb_info.get("pceId") not in ("0000", None)


def _tcb_info_version_above_3(d: Draft) -> bool:
    version = d.tcb_info.get("version")
    return isinstance(version, int) and not isinstance(version, bool) and version > 3


_QE_STATUSES_DCAP_QVL_IGNORES = ("ConfigurationNeeded", "OutOfDateConfigurationNeeded")


def _qe_level_configuration_status(d: Draft) -> bool:
    return any(
        level.get("tcbStatus") in _QE_STATUSES_DCAP_QVL_IGNORES
        for level in d.qe_identity["tcbLevels"]
    )


KNOWN_STRICTER: dict[str, Known] = {
    "pck_crl.dates": Known(
        "a CRL whose `thisUpdate` is in the future",
        _crl_from_the_future("pck_crl"),
        lambda e: (
            isinstance(e, CollateralExpiredError)
            and e.step == "pck_crl"
            and "is not valid before" in e.reason
        ),
    ),
    "root_ca_crl.dates": Known(
        "a CRL whose `thisUpdate` is in the future",
        _crl_from_the_future("root_ca_crl"),
        lambda e: (
            isinstance(e, CollateralExpiredError)
            and e.step == "root_ca"
            and "is not valid before" in e.reason
        ),
    ),
    "pck_crl_issuer_chain": Known(
        "dcap-qvl ignores the PCK CRL issuer chain",
        lambda d: d.pck_crl_chain != "sim",
        lambda e: isinstance(e, CollateralSignatureError | RootCaError) and e.step == "pck_crl",
    ),
    "tcb.pceId": Known(
        "a PCE-ID mismatch between TCB info and PCK certificate",
        _pce_id_is_not_the_pck_certificates,
        lambda e: (
            (isinstance(e, CollateralMismatchError) and "PCE-ID" in e.reason)
            or (isinstance(e, CollateralFormatError) and "pceId" in e.reason)
        ),
    ),
    "tcb.version": Known(
        "a TCB info version other than 3",
        _tcb_info_version_above_3,
        lambda e: isinstance(e, CollateralFormatError) and "version is" in e.reason,
    ),
    "tcb.tdxModuleIdentities": Known(
        "a malformed TDX module identity that the quote's module does not use",
        lambda d: True,
        lambda e: (
            isinstance(e, CollateralFormatError)
            and e.step == "tcb_info"
            and "tdxModuleIdentities[" in e.reason
        ),
    ),
    "qe.level.tcbStatus": Known(
        "a QE identity level whose status is `ConfigurationNeeded` or",
        _qe_level_configuration_status,
        lambda e: (
            isinstance(e, CollateralFormatError)
            and e.step == "qe_identity"
            and "tcbStatus" in e.reason
        ),
    ),
}


def known_stricter(changes: list[Change], draft: Draft, error: VerificationError) -> str | None:
    """The name of the known difference that explains tdx-verify refusing, or None."""
    for name, known in KNOWN_STRICTER.items():
        named = any(c.kind.startswith(name) for c in changes)
        if named and known.applies(draft) and known.refusal(error):
            return name
    return None


def unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def check(sim: SimWorld, base: str, changes: list[Change]) -> Verdicts:
    """Both verdicts on `base`'s collateral with `changes`, and that they agree (see module)."""
    draft = sim.bases[base].draft.copy()
    for change in changes:
        change.apply(draft)
    v = verdicts(sim.bases[base], draft.render())
    what = f"{base} platform, " + " | ".join(map(str, changes))
    if not isinstance(v.ours, VerificationError):
        assert not isinstance(v.theirs, str), (
            f"{what}: tdx-verify accepts ({v.ours}), dcap-qvl refuses: {v.theirs}"
        )
        status, advisories = v.theirs
        # README: tdx-verify names each advisory ID once; dcap-qvl repeats one a level repeats.
        assert v.ours == (status, unique(advisories)), f"{what}: {v.ours} != {v.theirs}"
    elif not isinstance(v.theirs, str):
        assert known_stricter(changes, draft, v.ours) is not None, (
            f"{what}: dcap-qvl accepts ({v.theirs}), tdx-verify refuses and this is not a "
            f"difference the README lists: {v.ours!r}"
        )
    return v


# -- the property ---------------------------------------------------------------------------------


@DIFFERENTIAL
@given(
    base=st.sampled_from(BASES),
    changes=st.lists(CHANGES, min_size=1, max_size=3),
)
def test_mutated_collateral_gets_the_same_verdict_from_both(
    sim: SimWorld, base: str, changes: list[Change]
) -> None:
    check(sim, base, changes)


def test_the_unmutated_collateral_is_accepted_by_both_with_each_status(sim: SimWorld) -> None:
    expected = {**{status: status for status in BASE_STATUSES}, INTEL_LAYOUT: "UpToDate"}
    for base, status in expected.items():
        v = check(sim, base, [])
        assert not isinstance(v.ours, VerificationError), v.ours
        assert v.ours[0] == status


def test_every_known_difference_is_listed_in_the_readme() -> None:
    readme = " ".join(README.read_text().split())
    for name, known in KNOWN_STRICTER.items():
        assert known.readme in readme, f"{name}: README does not say {known.readme!r}"


# -- the disagreements the differential found, kept as examples ----------------------------------


def _edit(kind: str, edit: Callable[[Draft], Any]) -> Change:
    def apply(d: Draft) -> None:
        edit(d)

    return Change(kind, "example", apply)


def _levels(d: Draft) -> list[dict[str, Any]]:
    levels = d.tcb_info["tcbLevels"]
    assert isinstance(levels, list)
    return levels


def _module_level(d: Draft) -> dict[str, Any]:
    level = d.tcb_info["tdxModuleIdentities"][0]["tcbLevels"][0]
    assert isinstance(level, dict)
    return level


def _set_tdx_svn(index: int, value: int) -> Callable[[Draft], None]:
    def edit(d: Draft) -> None:
        _levels(d)[0]["tcb"]["tdxtcbcomponents"][index]["svn"] = value

    return edit


def _lower_platform_pcesvn(d: Draft) -> None:
    _levels(d)[0]["tcb"]["pcesvn"] = 0


def _tie_older_level_with_higher_tdx(d: Draft) -> None:
    older = _levels(d)[1]["tcb"]
    older["pcesvn"] = _levels(d)[0]["tcb"]["pcesvn"]
    older["tdxtcbcomponents"][2]["svn"] += 1


EXAMPLES: dict[str, tuple[Callable[[Draft], Any], bool]] = {
    # Intel's order of TCB levels, not the JSON's: the verdict of reversed levels is the same.
    "levels_reversed": (lambda d: _levels(d).reverse(), True),
    "platform_level_pcesvn_lowered_below_the_older": (_lower_platform_pcesvn, True),
    "older_level_ties_sgx_and_pcesvn_with_higher_tdx": (_tie_older_level_with_higher_tdx, True),
    # TDX components 0 and 1 (the module's SVN and major version) are the module identity's.
    "tdx_component_0_above_the_module": (_set_tdx_svn(0, 9), True),
    "tdx_component_1_above_the_module": (_set_tdx_svn(1, 9), True),
    "tdx_component_2_above_the_platform": (_set_tdx_svn(2, 9), True),
    "module_identities_missing": (lambda d: d.tcb_info.pop("tdxModuleIdentities"), False),
    "module_identities_empty": (lambda d: d.tcb_info.__setitem__("tdxModuleIdentities", []), False),
    "module_identity_id_lower_case": (
        lambda d: d.tcb_info["tdxModuleIdentities"][0].__setitem__("id", "tdx_01"),
        True,
    ),
    "module_level_status_sw_hardening_needed": (
        lambda d: _module_level(d).__setitem__("tcbStatus", "SWHardeningNeeded"),
        False,
    ),
    "module_level_tcb_date_not_a_date": (
        lambda d: _module_level(d).__setitem__("tcbDate", "not a date"),
        False,
    ),
    "qe_level_status_sw_hardening_needed": (
        lambda d: d.qe_identity["tcbLevels"][0].__setitem__("tcbStatus", "SWHardeningNeeded"),
        False,
    ),
    "qe_level_tcb_date_missing": (lambda d: d.qe_identity["tcbLevels"][0].pop("tcbDate"), False),
    "tcb_type_missing": (lambda d: d.tcb_info.pop("tcbType"), False),
    "tcb_evaluation_data_number_missing": (
        lambda d: d.tcb_info.pop("tcbEvaluationDataNumber"),
        False,
    ),
    "qe_tcb_evaluation_data_number_missing": (
        lambda d: d.qe_identity.pop("tcbEvaluationDataNumber"),
        False,
    ),
    "matched_level_tcb_date_without_zone": (
        lambda d: _levels(d)[0].__setitem__("tcbDate", "2025-05-14T00:00:00"),
        False,
    ),
    "matched_level_tcb_date_before_1970": (
        lambda d: _levels(d)[0].__setitem__("tcbDate", "1969-12-31T23:59:59Z"),
        False,
    ),
    "older_level_tcb_date_missing": (lambda d: _levels(d)[1].pop("tcbDate"), False),
    "older_level_tcb_date_not_a_date": (
        lambda d: _levels(d)[1].__setitem__("tcbDate", "yesterday"),
        True,
    ),
    "issue_date_lower_case_rfc3339": (
        lambda d: d.tcb_info.__setitem__("issueDate", "2026-05-31t12:00:00z"),
        True,
    ),
    "issue_date_space_and_offset": (
        lambda d: d.tcb_info.__setitem__("issueDate", "2026-05-31 13:00:00+01:00"),
        True,
    ),
    "issue_date_before_1970": (
        lambda d: d.tcb_info.__setitem__("issueDate", "1969-12-31T23:59:59Z"),
        False,
    ),
    "tcb_info_signed_by_the_pck_platform_ca": (
        lambda d: setattr(d.tcb_plan, "chain", "platform_ca"),
        False,
    ),
    "qe_identity_signed_by_the_pck_platform_ca": (
        lambda d: setattr(d.qe_plan, "chain", "platform_ca"),
        False,
    ),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_disagreement_found_is_now_an_agreement(sim: SimWorld, name: str) -> None:
    edit, valid = EXAMPLES[name]
    v = check(sim, "UpToDate", [_edit(f"example.{name}", edit)])
    assert isinstance(v.theirs, str) is not valid, v.theirs
    assert isinstance(v.ours, VerificationError) is not valid, v.ours
