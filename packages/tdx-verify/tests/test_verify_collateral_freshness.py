"""CollateralCache freshness: collateral is fetched again every `max_age` (not only at its
nextUpdate), a failed refresh keeps serving collateral still valid, and an answer older than
what the cache verified (a replayed PCCS answer) is refused while the newer copy stays."""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from typing import Any

import pytest
from verify_pccs_app import pccs_transport
from verify_world import NOW, World, _iso

from tdx_verify import (
    DEFAULT_MAX_AGE,
    CacheEvent,
    Collateral,
    CollateralCache,
    CollateralFormatError,
    CollateralFreshness,
    CollateralRollback,
    PccsClient,
    PccsError,
    Policy,
    RevokedError,
    TcbStatusRejected,
    VerifiedQuote,
    Verifier,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


class Pccs:
    """The PCCS answer of the moment (None: HTTP 503), and how many sets were fetched."""

    def __init__(self, collateral: Collateral | None) -> None:
        self.current = collateral
        self.requests: list[str] = []

    def client(self) -> PccsClient:
        return PccsClient(
            "http://pccs.test",
            transport=pccs_transport(lambda: self.current, requests=self.requests),
        )


def cache_for(world: World, pccs: Pccs, **freshness: Any) -> CollateralCache:
    verifier = Verifier(root_ca_pem=world.root_pem, policy=Policy(accepted_tcb_statuses=None))
    return CollateralCache(pccs.client(), verifier, freshness=CollateralFreshness(**freshness))


def recovered(world: World, number: int = 18) -> dict[str, Any]:
    """TCB info where a newer level (tcbEvaluationDataNumber `number`) outdates the platform."""
    info = world.tcb_info_dict()
    newer = copy.deepcopy(info["tcbLevels"][0])
    newer["tcb"]["pcesvn"] = 200
    newer["tcbDate"] = _iso(NOW - DAY)
    info["tcbLevels"][0]["tcbStatus"] = "OutOfDate"
    info["tcbLevels"].insert(0, newer)
    info["tcbEvaluationDataNumber"] = number
    return info


def short_lived(info: dict[str, Any]) -> dict[str, Any]:
    """`info` with a nextUpdate two days after NOW."""
    info["nextUpdate"] = _iso(NOW + 2 * DAY)
    return info


async def status(cache: CollateralCache, quote: bytes, at: timedelta) -> str:
    result: VerifiedQuote = await cache.verify_quote(quote, now=NOW + at)
    return result.tcb_status


# -- refresh every max_age ---------------------------------------------------------------


async def test_collateral_is_fetched_again_once_max_age_old(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = cache_for(world, pccs)
    assert await status(cache, quote, timedelta(0)) == "UpToDate"
    pccs.current = world.collateral(tcb_info=recovered(world))  # Intel publishes a recovery
    assert await status(cache, quote, DEFAULT_MAX_AGE - SECOND) == "UpToDate"
    assert cache.fetch_count == 1
    assert await status(cache, quote, DEFAULT_MAX_AGE) == "OutOfDate"
    assert cache.fetch_count == 2
    assert timedelta(hours=24) == DEFAULT_MAX_AGE


async def test_a_default_policy_refuses_the_platform_a_refresh_outdated(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = CollateralCache(pccs.client(), Verifier(root_ca_pem=world.root_pem))
    await cache.verify_quote(quote, now=NOW)
    pccs.current = world.collateral(tcb_info=recovered(world))
    with pytest.raises(TcbStatusRejected) as exc:
        await cache.verify_quote(quote, now=NOW + DAY)
    assert exc.value.tcb_status == "OutOfDate"


async def test_the_observer_hears_a_failed_refresh_and_the_stale_collateral_served(
    world: World,
) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    events: list[CacheEvent] = []
    verifier = Verifier(root_ca_pem=world.root_pem, policy=Policy(accepted_tcb_statuses=None))
    cache = CollateralCache(
        pccs.client(), verifier, freshness=CollateralFreshness(), observer=events.append
    )
    await status(cache, quote, timedelta(0))
    pccs.current = None  # the PCCS answers 503
    assert await status(cache, quote, DEFAULT_MAX_AGE) == "UpToDate"
    assert events == ["fetched", "fetch_failed", "stale_served"]


async def test_max_age_is_a_setting(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = cache_for(world, pccs, max_age=HOUR)
    await status(cache, quote, timedelta(0))
    await status(cache, quote, HOUR - SECOND)
    assert cache.fetch_count == 1
    await status(cache, quote, HOUR)
    await status(cache, quote, 2 * HOUR - SECOND)
    assert cache.fetch_count == 2
    await status(cache, quote, 2 * HOUR)
    assert cache.fetch_count == 3


async def test_the_earliest_next_update_still_comes_first(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral(tcb_info=short_lived(world.tcb_info_dict())))
    cache = cache_for(world, pccs, max_age=30 * DAY)
    await status(cache, quote, timedelta(0))
    pccs.current = world.collateral()
    await status(cache, quote, 2 * DAY + SECOND)
    assert cache.fetch_count == 2


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1), 3600])
def test_freshness_settings_must_be_positive(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a positive timedelta"):
        CollateralFreshness(max_age=value)
    with pytest.raises(ValueError, match="must be a positive timedelta"):
        CollateralFreshness(retry_after=value)


# -- a failed refresh ----------------------------------------------------------------------


async def test_a_failed_refresh_serves_the_valid_collateral_and_retries_later(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = cache_for(world, pccs, retry_after=5 * 60 * SECOND)
    await status(cache, quote, timedelta(0))
    pccs.current = None
    with caplog.at_level(logging.WARNING, logger="tdx_verify"):
        assert await status(cache, quote, DAY) == "UpToDate"
    assert cache.fetch_count == 2
    (record,) = [r for r in caplog.records if r.name == "tdx_verify"]
    assert record.levelno == logging.WARNING
    assert "collateral refresh failed" in record.getMessage()
    assert "HTTP 503" in record.getMessage()
    assert "next try at 2025-07-02T12:05:00Z" in record.getMessage()
    assert await status(cache, quote, DAY + 299 * SECOND) == "UpToDate"
    assert cache.fetch_count == 2  # no new try before retry_after
    assert await status(cache, quote, DAY + 300 * SECOND) == "UpToDate"
    assert cache.fetch_count == 3
    pccs.current = world.collateral(tcb_info=recovered(world))
    assert await status(cache, quote, DAY + 600 * SECOND) == "OutOfDate"
    assert cache.fetch_count == 4
    assert await status(cache, quote, 2 * DAY + 599 * SECOND) == "OutOfDate"
    assert cache.fetch_count == 4  # the next refresh is max_age after the successful one


async def test_a_refresh_that_does_not_verify_serves_the_valid_collateral(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = cache_for(world, pccs)
    await status(cache, quote, timedelta(0))
    good = world.collateral(tcb_info=recovered(world))
    pccs.current = Collateral(**{**vars(good), "tcb_info_signature": bytes(64)})
    with caplog.at_level(logging.WARNING, logger="tdx_verify"):
        assert await status(cache, quote, DAY) == "UpToDate"
    assert "TCB info signature does not verify" in caplog.text


async def test_a_failed_fetch_past_next_update_fails_the_verification(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral(tcb_info=short_lived(world.tcb_info_dict())))
    cache = cache_for(world, pccs)
    await status(cache, quote, timedelta(0))
    pccs.current = None
    assert await status(cache, quote, 2 * DAY - SECOND) == "UpToDate"  # refresh failed, valid
    with pytest.raises(PccsError, match="HTTP 503"):
        await status(cache, quote, 2 * DAY + SECOND)


async def test_a_first_fetch_that_fails_fails(world: World) -> None:
    cache = cache_for(world, Pccs(None))
    with pytest.raises(PccsError, match="HTTP 503"):
        await status(cache, world.quote(), timedelta(0))


# -- rollback ------------------------------------------------------------------------------


def versions(world: World, item: str, *, expiring: bool) -> dict[str, Any]:
    """`World.collateral` arguments of a newer version of `item` (its TCB info expiring two days
    after NOW when `expiring`); the default arguments make the older version."""
    info = world.tcb_info_dict()
    if item == "tcb_info":
        info["tcbEvaluationDataNumber"] = 18
    newer: dict[str, Any] = {"tcb_info": short_lived(info) if expiring else info}
    if item == "qe_identity":
        qe = world.qe_identity_dict()
        qe["tcbEvaluationDataNumber"] = 18
        newer["qe_identity"] = qe
    if item == "pck_crl":
        newer["pck_crl_number"] = 2
    if item == "root_ca_crl":
        newer["root_crl_number"] = 2
    return newer


@pytest.mark.parametrize(
    ("item", "seen"), [("tcb_info", 18), ("qe_identity", 18), ("pck_crl", 2), ("root_ca_crl", 2)]
)
async def test_an_older_answer_is_refused_and_the_newer_copy_kept(
    world: World, caplog: pytest.LogCaptureFixture, item: str, seen: int
) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral(**versions(world, item, expiring=True)))
    cache = cache_for(world, pccs)
    await status(cache, quote, timedelta(0))
    pccs.current = world.collateral()  # valid, signed, and older: a replay
    with caplog.at_level(logging.WARNING, logger="tdx_verify"):
        await status(cache, quote, DAY)  # the newer copy, still valid, is served
    assert f"older than the {seen} already verified" in caplog.text
    with pytest.raises(CollateralRollback) as exc:
        await status(cache, quote, 2 * DAY + SECOND)  # the newer copy expired: nothing to serve
    assert (exc.value.item, exc.value.seen, exc.value.got) == (item, seen, seen - 1)
    assert isinstance(exc.value, PccsError)
    pccs.current = world.collateral(**versions(world, item, expiring=False))
    assert await status(cache, quote, 2 * DAY + 2 * SECOND) == "UpToDate"


async def test_a_replayed_crl_cannot_hide_a_revocation(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral(revoked_pck=[world.pck_leaf.serial_number], pck_crl_number=2))
    cache = cache_for(world, pccs)
    with pytest.raises(RevokedError):
        await status(cache, quote, timedelta(0))
    pccs.current = world.collateral(pck_crl_number=1)  # the CRL from before the revocation
    with pytest.raises(RevokedError):
        await status(cache, quote, DAY)
    assert cache.fetch_count == 2


async def test_a_replayed_tcb_info_cannot_hide_a_recovery(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral(tcb_info=recovered(world, 18)))
    cache = cache_for(world, pccs)
    assert await status(cache, quote, timedelta(0)) == "OutOfDate"
    pccs.current = world.collateral()  # number 17, from before the recovery
    assert await status(cache, quote, DAY) == "OutOfDate"
    assert cache.fetch_count == 2


async def test_an_answer_without_a_version_number_is_refused_after_one_was_seen(
    world: World,
) -> None:
    """TCB info without tcbEvaluationDataNumber does not verify at all (dcap-qvl refuses it
    too), so a PCCS answer that drops the number never replaces numbered collateral."""
    quote = world.quote()
    pccs = Pccs(world.collateral(tcb_info=short_lived(world.tcb_info_dict())))
    cache = cache_for(world, pccs)
    await status(cache, quote, timedelta(0))
    unnumbered = world.tcb_info_dict()
    del unnumbered["tcbEvaluationDataNumber"]
    pccs.current = world.collateral(tcb_info=unnumbered)
    with pytest.raises(CollateralFormatError, match="tcbEvaluationDataNumber is missing"):
        await status(cache, quote, 3 * DAY)


async def test_equal_and_higher_numbers_are_accepted(world: World) -> None:
    quote = world.quote()
    pccs = Pccs(world.collateral())
    cache = cache_for(world, pccs)
    await status(cache, quote, timedelta(0))
    pccs.current = world.collateral()  # re-issued, same numbers
    await status(cache, quote, DAY)
    pccs.current = world.collateral(
        tcb_info=recovered(world, 18), pck_crl_number=2, root_crl_number=2
    )
    assert await status(cache, quote, 2 * DAY) == "OutOfDate"
    assert cache.fetch_count == 3
