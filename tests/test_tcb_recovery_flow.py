"""A TCB recovery and a revocation published by a running `tdx-sim`, seen through tdx-verify's
`CollateralCache` within `max_age` (not at the collateral's nextUpdate, 30 days away), graced by
`Policy.tcb_grace_days`, refused by `Policy.denied_advisory_ids`, and by the `verify-quote`
command with `--tcb-grace-days` / `--deny-advisory`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tdx_verify import (
    AdvisoryDenied,
    CollateralCache,
    PccsClient,
    Policy,
    RevokedError,
    TcbStatusRejected,
    Verifier,
)
from tests import procs
from tests.procs import Program

pytestmark = pytest.mark.e2e

REPORT_DATA = bytes.fromhex("5e" * 64)
ADVISORY = "INTEL-SA-01234"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Program]:
    program = procs.sim(tmp_path)
    with procs.running(program):
        yield program


def _quote(sim: Program) -> bytes:
    response = httpx.get(f"{sim.url}/attest/{REPORT_DATA.hex()}", timeout=10.0)
    assert response.status_code == 200, response.text
    return response.content


def _root(tmp_path: Path) -> bytes:
    return (tmp_path / "sim-state" / "root_ca.pem").read_bytes()


async def _post(url: str, body: dict[str, object] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.post(url, json=body)


async def _publish_recovery(sim: Program, tcb_date: datetime) -> None:
    response = await _post(
        f"{sim.url}/pccs/tcb-recovery",
        {"tcb_date": tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ"), "advisory_ids": [ADVISORY]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["tcb_evaluation_data_number"] == 18


async def test_a_recovery_reaches_the_cache_within_max_age_and_is_graced(
    sim: Program, tmp_path: Path
) -> None:
    quote, root = _quote(sim), _root(tmp_path)
    now = datetime.now(UTC)
    recovery = (now - timedelta(days=2)).replace(microsecond=0)
    async with PccsClient(sim.url) as client:
        strict = CollateralCache(client, Verifier(root_ca_pem=root))
        assert (await strict.verify_quote(quote, now=now)).tcb_status == "UpToDate"
        await _publish_recovery(sim, recovery)
        # The cached collateral is still fresh: the recovery is not seen yet.
        seen = await strict.verify_quote(quote, now=now + timedelta(hours=23))
        assert seen.tcb_status == "UpToDate"
        with pytest.raises(TcbStatusRejected) as exc:
            await strict.verify_quote(quote, now=now + timedelta(hours=24))
        assert (exc.value.tcb_status, exc.value.advisory_ids) == ("OutOfDate", (ADVISORY,))
        assert strict.fetch_count == 2

        graced = CollateralCache(
            client, Verifier(root_ca_pem=root, policy=Policy(tcb_grace_days=30))
        )
        result = await graced.verify_quote(quote, now=now)
        assert result.tcb_status == "OutOfDate"
        assert result.tcb_out_of_date_since == recovery
        assert result.tcb_grace_until == recovery + timedelta(days=30)
        with pytest.raises(TcbStatusRejected, match="30-day grace ended"):
            await graced.verify_quote(quote, now=recovery + timedelta(days=30))

        denied = CollateralCache(
            client,
            Verifier(
                root_ca_pem=root,
                policy=Policy(tcb_grace_days=30, denied_advisory_ids=frozenset({ADVISORY})),
            ),
        )
        with pytest.raises(AdvisoryDenied) as denial:
            await denied.verify_quote(quote, now=now)
        assert denial.value.denied == (ADVISORY,)


async def test_a_revocation_reaches_the_cache_within_max_age(sim: Program, tmp_path: Path) -> None:
    quote, root = _quote(sim), _root(tmp_path)
    now = datetime.now(UTC)
    async with PccsClient(sim.url) as client:
        cache = CollateralCache(client, Verifier(root_ca_pem=root))
        assert (await cache.verify_quote(quote, now=now)).tcb_status == "UpToDate"
        response = await _post(f"{sim.url}/pccs/revoke-pck")
        assert response.status_code == 200, response.text
        # An hour later the cache still holds the CRL it verified before the revocation.
        later = await cache.verify_quote(quote, now=now + timedelta(hours=1))
        assert later.tcb_status == "UpToDate"
        with pytest.raises(RevokedError, match="PCK leaf certificate"):
            await cache.verify_quote(quote, now=now + timedelta(hours=24))


def _verify_quote(*args: str | Path) -> tuple[int, dict[str, object]]:
    argv = [procs.program("verify-quote"), *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=procs.base_env())
    assert "Traceback" not in done.stderr, done.stderr
    verdict: dict[str, object] = json.loads(done.stdout)
    return done.returncode, verdict


def test_verify_quote_grace_and_deny_flags_against_the_sim(sim: Program, tmp_path: Path) -> None:
    quote_file = tmp_path / "quote.bin"
    quote_file.write_bytes(_quote(sim))
    recovery = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    asyncio.run(_publish_recovery(sim, recovery))
    common = (
        "--quote",
        quote_file,
        "--pccs-url",
        sim.url,
        "--root-ca",
        tmp_path / "sim-state" / "root_ca.pem",
    )
    code, verdict = _verify_quote(*common)
    assert code == 1 and verdict["tcb_status"] == "OutOfDate"
    assert verdict["advisory_ids"] == [ADVISORY]
    code, verdict = _verify_quote(*common, "--tcb-grace-days", "7")
    assert code == 0 and verdict["valid"] is True and verdict["tcb_status"] == "OutOfDate"
    assert verdict["tcb_grace_until"] == (recovery + timedelta(days=7)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    code, verdict = _verify_quote(*common, "--tcb-grace-days", "3")
    assert code == 1 and "3-day grace ended" in str(verdict["error"])
    code, verdict = _verify_quote(*common, "--tcb-grace-days", "7", "--deny-advisory", ADVISORY)
    assert code == 1 and "denied advisories: INTEL-SA-01234" in str(verdict["error"])
