"""The TCB grace (`Policy.tcb_grace_days`) and the advisory deny-list
(`Policy.denied_advisory_ids`), on collateral of the synthetic test PKI where a newer TCB level
put the platform out of date; dcap-qvl agrees on every status, which stays the real one."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from verify_agree import both
from verify_world import NOW, World

from tdx_verify import (
    AdvisoryDenied,
    AllowlistError,
    Policy,
    PolicySettingError,
    TcbStatusRejected,
    Verifier,
    parse_denied_advisories,
    parse_tcb_grace_days,
)

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def verifier(world: World, **policy: Any) -> Verifier:
    return Verifier(root_ca_pem=world.root_pem, policy=Policy(**policy))


def recovered(
    world: World,
    *newer: tuple[datetime, str],
    platform_status: str = "OutOfDate",
    advisories: tuple[str, ...] = ("INTEL-SA-01001",),
) -> dict[str, Any]:
    """The TCB info with `newer` levels (tcbDate, status; newest first) above the platform's own
    level, which none of them lets the platform reach (PCESVN 200+), and which becomes
    `platform_status` with `advisories`."""
    info = world.tcb_info_dict()
    own = info["tcbLevels"][0]
    levels = []
    for i, (date, status) in enumerate(newer):
        level = copy.deepcopy(own)
        level["tcb"]["pcesvn"] = 220 - i
        level["tcbDate"] = iso(date)
        level["tcbStatus"] = status
        level.pop("advisoryIDs", None)
        levels.append(level)
    own["tcbStatus"] = platform_status
    own["advisoryIDs"] = list(advisories)
    info["tcbLevels"] = levels + info["tcbLevels"]
    info["tcbEvaluationDataNumber"] += len(newer)
    return info


def agree(world: World, quote: bytes, collateral: Any, status: str) -> None:
    """dcap-qvl gives the same (real) status as we do under a policy accepting any status."""
    v = both(quote, collateral, NOW, root_pem=world.root_pem, root_der=world.root_der)
    assert (v.ours_status, v.ref_status) == (status, status), (v.ours_error, v.ref_error)


# -- the grace window ------------------------------------------------------------------------


def test_out_of_date_is_accepted_until_n_days_after_the_newer_levels_tcb_date(
    world: World,
) -> None:
    quote = world.quote()
    inside = world.collateral(tcb_info=recovered(world, (NOW - 30 * DAY + SECOND, "UpToDate")))
    agree(world, quote, inside, "OutOfDate")
    result = verifier(world, tcb_grace_days=30).verify(quote, inside, now=NOW)
    assert result.tcb_status == "OutOfDate"
    assert result.advisory_ids == ("INTEL-SA-01001",)
    assert result.tcb_out_of_date_since == NOW - 30 * DAY + SECOND
    assert result.tcb_grace_until == NOW + SECOND
    assert result.tcb_grace_until.tzinfo is not None

    at_the_end = world.collateral(tcb_info=recovered(world, (NOW - 30 * DAY, "UpToDate")))
    agree(world, quote, at_the_end, "OutOfDate")
    with pytest.raises(
        TcbStatusRejected, match="30-day grace ended at 2025-07-01T12:00:00Z"
    ) as exc:
        verifier(world, tcb_grace_days=30).verify(quote, at_the_end, now=NOW)
    assert exc.value.tcb_status == "OutOfDate"
    assert exc.value.advisory_ids == ("INTEL-SA-01001",)


def test_the_same_collateral_is_refused_once_the_grace_has_passed(world: World) -> None:
    quote = world.quote()
    collateral = world.collateral(tcb_info=recovered(world, (NOW - 10 * DAY, "UpToDate")))
    v = verifier(world, tcb_grace_days=20)
    assert v.verify(quote, collateral, now=NOW).tcb_grace_until == NOW + 10 * DAY
    last = NOW + 10 * DAY - SECOND
    assert v.verify(quote, collateral, now=last).tcb_grace_until == NOW + 10 * DAY
    with pytest.raises(TcbStatusRejected, match="grace ended"):
        v.verify(quote, collateral, now=NOW + 10 * DAY)


def test_without_grace_out_of_date_is_refused_as_before(world: World) -> None:
    collateral = world.collateral(tcb_info=recovered(world, (NOW - DAY, "UpToDate")))
    with pytest.raises(TcbStatusRejected) as exc:
        verifier(world).verify(world.quote(), collateral, now=NOW)
    assert (
        str(exc.value)
        == "policy: TCB status OutOfDate is not accepted (advisories: INTEL-SA-01001)"
    )


def test_the_oldest_newer_level_starts_the_grace(world: World) -> None:
    """Of several newer levels, the oldest one (the first to put the platform out of date)
    dates the grace, not the newest."""
    newest, middle, oldest = NOW - 2 * DAY, NOW - 20 * DAY, NOW - 40 * DAY
    info = recovered(
        world, (newest, "UpToDate"), (middle, "OutOfDate"), (oldest, "SWHardeningNeeded")
    )
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")
    seen = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert seen.tcb_out_of_date_since == oldest
    assert seen.tcb_grace_until is None  # every status accepted: no grace needed
    with pytest.raises(TcbStatusRejected, match="out of date since 2025-05-22T12:00:00Z"):
        verifier(world, tcb_grace_days=40).verify(quote, collateral, now=NOW)
    result = verifier(world, tcb_grace_days=41).verify(quote, collateral, now=NOW)
    assert result.tcb_grace_until == oldest + 41 * DAY


def test_a_platform_on_a_lower_level_is_dated_by_the_levels_above_it(world: World) -> None:
    """The platform falls to the real TCB info's second level (PCESVN 5): the real top level,
    dated 2024-03-13, is the one that put it out of date."""
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcb"]["pcesvn"] = 200
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")
    result = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert result.tcb_out_of_date_since == datetime(2024, 3, 13, tzinfo=UTC)
    with pytest.raises(TcbStatusRejected, match="365-day grace ended at 2025-03-13T00:00:00Z"):
        verifier(world, tcb_grace_days=365).verify(quote, collateral, now=NOW)


def test_no_newer_level_means_no_grace(world: World) -> None:
    """An out-of-date top level has no newer level to date it: refused, whatever the grace."""
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = "OutOfDate"
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")
    seen = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert seen.tcb_out_of_date_since is None
    with pytest.raises(TcbStatusRejected, match="no tcbDate says since when"):
        verifier(world, tcb_grace_days=365).verify(quote, collateral, now=NOW)


def test_a_newer_level_without_a_readable_tcb_date_means_no_grace(world: World) -> None:
    info = recovered(world, (NOW - DAY, "UpToDate"))
    info["tcbLevels"][0]["tcbDate"] = "yesterday"
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")  # dcap-qvl does not read tcbDate, nor do we
    with pytest.raises(TcbStatusRejected, match="no tcbDate says since when"):
        verifier(world, tcb_grace_days=30).verify(quote, collateral, now=NOW)


@pytest.mark.parametrize("date", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"])
def test_a_tcb_date_at_the_ends_of_the_calendar_means_no_grace(world: World, date: str) -> None:
    """Dates a datetime cannot move by N days (or hold in UTC) are not readable tcbDates: the
    collateral still verifies (dcap-qvl does not read tcbDate), without a grace."""
    info = recovered(world, (NOW - DAY, "UpToDate"))
    info["tcbLevels"][0]["tcbDate"] = date
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")
    seen = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert seen.tcb_out_of_date_since is None
    with pytest.raises(TcbStatusRejected, match="no tcbDate says since when"):
        verifier(world, tcb_grace_days=365).verify(quote, collateral, now=NOW)


def test_out_of_date_configuration_needed_is_judged_as_configuration_needed(world: World) -> None:
    info = recovered(
        world, (NOW - DAY, "ConfigurationNeeded"), platform_status="OutOfDateConfigurationNeeded"
    )
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDateConfigurationNeeded")
    result = verifier(world, tcb_grace_days=7).verify(quote, collateral, now=NOW)
    assert result.tcb_status == "OutOfDateConfigurationNeeded"
    assert result.tcb_grace_until == NOW + 6 * DAY
    strict = verifier(world, tcb_grace_days=7, accepted_tcb_statuses=frozenset({"UpToDate"}))
    with pytest.raises(TcbStatusRejected, match="OutOfDateConfigurationNeeded is not accepted"):
        strict.verify(quote, collateral, now=NOW)


def test_grace_accepts_out_of_date_only_as_up_to_date(world: World) -> None:
    """A policy that does not accept UpToDate gives no grace to OutOfDate."""
    collateral = world.collateral(tcb_info=recovered(world, (NOW - DAY, "UpToDate")))
    v = verifier(world, tcb_grace_days=30, accepted_tcb_statuses=frozenset({"ConfigurationNeeded"}))
    with pytest.raises(TcbStatusRejected):
        v.verify(world.quote(), collateral, now=NOW)


@pytest.mark.parametrize("accepted", [None, frozenset({"UpToDate"})])
def test_revoked_is_never_graced(world: World, accepted: frozenset[str] | None) -> None:
    info = recovered(world, (NOW - DAY, "UpToDate"), platform_status="Revoked")
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    v = both(quote, collateral, NOW, root_pem=world.root_pem, root_der=world.root_der)
    assert v.ours_status is None and v.ref_status is None
    with pytest.raises(TcbStatusRejected, match="TCB status Revoked is not accepted") as exc:
        verifier(world, tcb_grace_days=365, accepted_tcb_statuses=accepted).verify(
            quote, collateral, now=NOW
        )
    assert exc.value.tcb_status == "Revoked"


def test_an_out_of_date_qe_is_dated_by_its_newer_qe_identity_level(world: World) -> None:
    qe_date = NOW - 5 * DAY
    ident = world.qe_identity_dict()
    ident["tcbLevels"] = [
        {"tcb": {"isvsvn": 200}, "tcbDate": iso(qe_date), "tcbStatus": "UpToDate"},
        {
            "tcb": {"isvsvn": 0},
            "tcbDate": "2020-03-13T00:00:00Z",
            "tcbStatus": "OutOfDate",
            "advisoryIDs": ["INTEL-SA-01002"],
        },
    ]
    quote, collateral = world.quote(), world.collateral(qe_identity=ident)
    agree(world, quote, collateral, "OutOfDate")
    result = verifier(world, tcb_grace_days=6).verify(quote, collateral, now=NOW)
    assert (result.tcb_status, result.advisory_ids) == ("OutOfDate", ("INTEL-SA-01002",))
    assert result.tcb_out_of_date_since == qe_date
    assert result.tcb_grace_until == qe_date + 6 * DAY
    with pytest.raises(TcbStatusRejected, match="5-day grace ended"):
        verifier(world, tcb_grace_days=5).verify(quote, collateral, now=NOW)


def test_an_out_of_date_tdx_module_is_dated_by_its_newer_module_level(world: World) -> None:
    module_date = NOW - 3 * DAY
    info = world.tcb_info_dict()
    for ident in info["tdxModuleIdentities"]:
        ident["tcbLevels"] = [
            {"tcb": {"isvsvn": 250}, "tcbDate": iso(module_date), "tcbStatus": "UpToDate"},
            {"tcb": {"isvsvn": 0}, "tcbDate": "2020-01-01T00:00:00Z", "tcbStatus": "OutOfDate"},
        ]
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "OutOfDate")
    result = verifier(world, tcb_grace_days=4).verify(quote, collateral, now=NOW)
    assert result.tcb_out_of_date_since == module_date
    assert result.tcb_grace_until == module_date + 4 * DAY


def test_the_earliest_out_of_date_component_dates_the_grace(world: World) -> None:
    """Platform out of date for 10 days, QE for 2: the platform's date counts."""
    ident = world.qe_identity_dict()
    ident["tcbLevels"] = [
        {"tcb": {"isvsvn": 200}, "tcbDate": iso(NOW - 2 * DAY), "tcbStatus": "UpToDate"},
        {"tcb": {"isvsvn": 0}, "tcbDate": "2020-03-13T00:00:00Z", "tcbStatus": "OutOfDate"},
    ]
    info = recovered(world, (NOW - 10 * DAY, "UpToDate"))
    quote = world.quote()
    collateral = world.collateral(tcb_info=info, qe_identity=ident)
    agree(world, quote, collateral, "OutOfDate")
    result = verifier(world, tcb_grace_days=11).verify(quote, collateral, now=NOW)
    assert result.tcb_out_of_date_since == NOW - 10 * DAY
    with pytest.raises(TcbStatusRejected):
        verifier(world, tcb_grace_days=10).verify(quote, collateral, now=NOW)


@pytest.mark.parametrize(
    ("platform_status", "converged", "accepted"),
    [
        ("SWHardeningNeeded", "OutOfDate", {"UpToDate"}),
        (
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDateConfigurationNeeded",
            {"UpToDate", "ConfigurationNeeded"},
        ),
    ],
)
def test_the_grace_judges_the_status_without_its_out_of_date_part(
    world: World, platform_status: str, converged: str, accepted: set[str]
) -> None:
    """A platform that needs SW hardening with a QE out of date for 5 days: Intel's convergence
    says OutOfDate (or OutOfDateConfigurationNeeded), but within the grace it is judged as what
    it is without the out-of-date QE, not as UpToDate (or ConfigurationNeeded): a policy that
    refuses the platform's own status refuses it. The host picks the QE and the TDX module."""
    ident = world.qe_identity_dict()
    ident["tcbLevels"] = [
        {"tcb": {"isvsvn": 200}, "tcbDate": iso(NOW - 5 * DAY), "tcbStatus": "UpToDate"},
        {"tcb": {"isvsvn": 0}, "tcbDate": "2020-03-13T00:00:00Z", "tcbStatus": "OutOfDate"},
    ]
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = platform_status
    quote, collateral = world.quote(), world.collateral(tcb_info=info, qe_identity=ident)
    agree(world, quote, collateral, converged)
    strict = verifier(world, tcb_grace_days=30, accepted_tcb_statuses=frozenset(accepted))
    with pytest.raises(
        TcbStatusRejected, match=f"without its out-of-date part it is {platform_status}"
    ) as exc:
        strict.verify(quote, collateral, now=NOW)
    assert exc.value.tcb_status == converged
    lenient = verifier(
        world, tcb_grace_days=30, accepted_tcb_statuses=frozenset({*accepted, platform_status})
    )
    result = lenient.verify(quote, collateral, now=NOW)
    assert (result.tcb_status, result.tcb_status_within_grace) == (converged, platform_status)
    assert result.tcb_grace_until == NOW + 25 * DAY
    # Applied again later with what the result carries, the policy judges the same.
    with pytest.raises(TcbStatusRejected, match="without its out-of-date part"):
        strict.policy.check(
            result.quote.body,
            result.tcb_status,
            result.advisory_ids,
            out_of_date_since=result.tcb_out_of_date_since,
            status_within_grace=result.tcb_status_within_grace,
            now=NOW,
        )


@pytest.mark.parametrize("within", ["OutOfDate", "Revoked", "Great"])
def test_a_status_within_grace_must_be_one_without_an_out_of_date_part(
    world: World, within: str
) -> None:
    collateral = world.collateral(tcb_info=recovered(world, (NOW - DAY, "UpToDate")))
    result = verifier(world, accepted_tcb_statuses=None).verify(world.quote(), collateral, now=NOW)
    assert result.tcb_status_within_grace == "UpToDate"
    with pytest.raises(ValueError, match="status_within_grace"):
        Policy(tcb_grace_days=30).check(
            result.quote.body,
            result.tcb_status,
            result.advisory_ids,
            out_of_date_since=result.tcb_out_of_date_since,
            status_within_grace=within,
            now=NOW,
        )


def test_an_up_to_date_quote_needs_no_grace(world: World) -> None:
    quote, collateral = world.quote(), world.collateral()
    agree(world, quote, collateral, "UpToDate")
    result = verifier(world, tcb_grace_days=30).verify(quote, collateral, now=NOW)
    assert (result.tcb_status, result.tcb_out_of_date_since, result.tcb_grace_until) == (
        "UpToDate",
        None,
        None,
    )


def test_the_policy_can_be_applied_again_later_to_a_verified_result(world: World) -> None:
    """Re-appraisal: the verified result carries what the grace reads."""
    collateral = world.collateral(tcb_info=recovered(world, (NOW - 10 * DAY, "UpToDate")))
    policy = Policy(tcb_grace_days=30)
    result = Verifier(root_ca_pem=world.root_pem, policy=policy).verify(
        world.quote(), collateral, now=NOW
    )
    again = policy.check(
        result.quote.body,
        result.tcb_status,
        result.advisory_ids,
        out_of_date_since=result.tcb_out_of_date_since,
        now=NOW + 19 * DAY,
    )
    assert again == NOW + 20 * DAY
    with pytest.raises(TcbStatusRejected, match="grace ended"):
        policy.check(
            result.quote.body,
            result.tcb_status,
            result.advisory_ids,
            out_of_date_since=result.tcb_out_of_date_since,
            now=NOW + 20 * DAY,
        )
    with pytest.raises(TcbStatusRejected, match="no tcbDate"):
        policy.check(result.quote.body, result.tcb_status, result.advisory_ids)
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        policy.check(
            result.quote.body,
            result.tcb_status,
            result.advisory_ids,
            out_of_date_since=result.tcb_out_of_date_since,
            now=datetime(2025, 7, 1),
        )


# -- the advisory deny-list --------------------------------------------------------------


def test_a_denied_advisory_refuses_an_accepted_status(world: World) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = "SWHardeningNeeded"
    info["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-00615", "INTEL-SA-00657"]
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    agree(world, quote, collateral, "SWHardeningNeeded")
    denied = frozenset({"INTEL-SA-00657", "INTEL-SA-00999"})
    with pytest.raises(AdvisoryDenied, match=r"denied advisories: INTEL-SA-00657$") as exc:
        verifier(world, denied_advisory_ids=denied).verify(quote, collateral, now=NOW)
    assert exc.value.denied == ("INTEL-SA-00657",)
    assert exc.value.tcb_status == "SWHardeningNeeded"
    assert exc.value.advisory_ids == ("INTEL-SA-00615", "INTEL-SA-00657")
    assert exc.value.step == "policy"


def test_an_advisory_not_denied_passes(world: World) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = "SWHardeningNeeded"
    info["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-00615"]
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    v = verifier(world, denied_advisory_ids=frozenset({"INTEL-SA-00657"}))
    assert v.verify(quote, collateral, now=NOW).advisory_ids == ("INTEL-SA-00615",)


def test_a_denied_advisory_refuses_within_the_grace_and_from_the_qe(world: World) -> None:
    ident = world.qe_identity_dict()
    ident["tcbLevels"] = [
        {"tcb": {"isvsvn": 200}, "tcbDate": iso(NOW - DAY), "tcbStatus": "UpToDate"},
        {
            "tcb": {"isvsvn": 0},
            "tcbDate": "2020-03-13T00:00:00Z",
            "tcbStatus": "OutOfDate",
            "advisoryIDs": ["INTEL-SA-01002"],
        },
    ]
    quote, collateral = world.quote(), world.collateral(qe_identity=ident)
    assert verifier(world, tcb_grace_days=30).verify(quote, collateral, now=NOW).tcb_grace_until
    with pytest.raises(AdvisoryDenied) as exc:
        verifier(
            world, tcb_grace_days=30, denied_advisory_ids=frozenset({"INTEL-SA-01002"})
        ).verify(quote, collateral, now=NOW)
    assert exc.value.denied == ("INTEL-SA-01002",)


def test_a_deny_list_does_not_touch_the_real_vector(
    real_quote: bytes, real_collateral: Any
) -> None:
    from verify_vectors import VECTOR_NOW

    policy = Policy(denied_advisory_ids=frozenset({"INTEL-SA-00837", "INTEL-SA-00106"}))
    result = Verifier(policy=policy).verify(real_quote, real_collateral, now=VECTOR_NOW)
    assert (result.tcb_status, result.advisory_ids, result.tcb_grace_until) == (
        "UpToDate",
        (),
        None,
    )


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, -1, 366, True, 1.5, "30"])
def test_a_grace_out_of_range_is_refused(days: Any) -> None:
    with pytest.raises(PolicySettingError, match=r"tcb_grace_days: .* is not a number of days"):
        Policy(tcb_grace_days=days)


@pytest.mark.parametrize("ids", [{"CVE-2024-0001"}, {"INTEL-SA-0083"}, {"intel-sa-00837"}, {5}])
def test_a_malformed_denied_advisory_is_refused(ids: set[Any]) -> None:
    with pytest.raises(PolicySettingError, match="is not an advisory ID like INTEL-SA-00837"):
        Policy(denied_advisory_ids=frozenset(ids))


def test_denied_advisories_must_be_a_frozenset() -> None:
    with pytest.raises(TypeError):
        Policy(denied_advisory_ids={"INTEL-SA-00837"})  # type: ignore[arg-type]


def test_grace_days_parse_like_the_other_service_flags() -> None:
    assert parse_tcb_grace_days("30") == 30
    assert parse_tcb_grace_days(" 365 ") == 365
    assert parse_tcb_grace_days(None) is None
    assert parse_tcb_grace_days("  ") is None
    for bad in ("0", "366", "-1", "1e3", "thirty", "3 0", "99999"):
        with pytest.raises(PolicySettingError) as exc:
            parse_tcb_grace_days(bad, flag="--tcb-grace-days")
        assert exc.value.reason.startswith("--tcb-grace-days: ")
        assert isinstance(exc.value, AllowlistError)


def test_denied_advisories_parse_from_repeated_flags_and_comma_lists() -> None:
    assert parse_denied_advisories(["INTEL-SA-00837, intel-sa-00615", "", "INTEL-SA-00837"]) == (
        frozenset({"INTEL-SA-00837", "INTEL-SA-00615"})
    )
    assert parse_denied_advisories([]) == frozenset()
    with pytest.raises(PolicySettingError) as exc:
        parse_denied_advisories(["INTEL-SA-00837,SA-1"])
    assert exc.value.reason == "--deny-advisory: 'SA-1' is not an advisory ID like INTEL-SA-00837"


def test_advisory_ids_of_the_real_tcb_info_have_the_accepted_shape(real_collateral: Any) -> None:
    import json

    info = json.loads(real_collateral.tcb_info)
    ids = {a for level in info["tcbLevels"] for a in level.get("advisoryIDs", [])}
    assert ids and parse_denied_advisories(sorted(ids)) == frozenset(ids)
