"""Re-appraisal against the real simulator (`tdx-sim` in-process: its quotes, its PCCS and its
TCB recoveries) and a real registry on each backend: `tdx-registry reappraise` (the CLI, run as
a user runs it) and `--reappraise-every` in a live server."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from log_helpers import check_log_invariants, expected_entry
from registry_helpers import Instance, openapi_client
from sanic import Request, Sanic
from test_registry_store import make_record

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_registry import (
    VERDICT_HISTORY_LIMIT,
    CheckedQuote,
    DatabaseTarget,
    InstanceRecord,
    PastVerdict,
    PonyRecordStore,
    Settings,
    Verdict,
    create_app,
    merge_registration,
)
from tdx_registry.cli import main
from tdx_registry.reappraise import (
    JITTER,
    ReappraisalSummary,
    Reappraiser,
    RecordSuperseded,
    VerdictAlreadyCurrent,
    reappraise_forever,
    reappraised,
)
from tdx_report_data import prove_possession, report_data_for_v2
from tdx_service_kit.testing import serve
from tdx_sim import SimOptions, SimPlatform
from tdx_sim.app import SimSettings
from tdx_sim.app import create_app as create_sim_app
from tdx_verify import PckChainError, Policy
from tdx_verify._pki import Window

PCCS_PREFIXES = ("/sgx/certification/", "/tdx/certification/")
ONE_FETCH_SET = Counter(
    {
        "/sgx/certification/v4/pckcrl": 1,
        "/tdx/certification/v4/tcb": 1,
        "/tdx/certification/v4/qe/identity": 1,
        "/sgx/certification/v4/rootcacrl": 1,
    }
)


@dataclass
class Sim:
    url: str
    platform: SimPlatform
    root_ca: Path
    pccs_requests: Counter[str]

    def recover(self, *, days_ago: float = 1, advisory_ids: tuple[str, ...] = ()) -> datetime:
        """Publish a TCB recovery dated `days_ago` days ago: the platform turns OutOfDate."""
        when = datetime.now(UTC) - timedelta(days=days_ago)
        return self.platform.publish_tcb_recovery(tcb_date=when, advisory_ids=advisory_ids).tcb_date


@asynccontextmanager
async def running_sim(state_dir: Path, tcb_status: str = "UpToDate") -> AsyncIterator[Sim]:
    """The simulator on loopback, counting the PCCS requests it answers."""
    Sanic.test_mode = True
    app = create_sim_app(
        SimSettings(state_dir=state_dir, options=SimOptions(tcb_status=tcb_status))
    )
    requests: Counter[str] = Counter()

    async def count(request: Request) -> None:
        if request.path.startswith(PCCS_PREFIXES):
            requests[request.path] += 1

    app.register_middleware(count, "request")
    async with serve(app) as url:
        yield Sim(url, app.ctx.platform, state_dir / "root_ca.pem", requests)


def registry_settings(db: DatabaseTarget, sim: Sim, **overrides: Any) -> Settings:
    overrides.setdefault("policy", Policy())
    overrides.setdefault("read_cache_ttl", 0)
    return Settings(
        database=db,
        pccs_url=sim.url,
        trusted_root_ca_pem=sim.root_ca.read_bytes(),
        allow_missing_event_log=True,
        any_measurement=True,
        rate_limit=None,
        log_key_path=sim.root_ca.parent.parent / "registry-log.key",
        **overrides,
    )


_apps = iter(range(1_000_000))


@asynccontextmanager
async def running_registry(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, name=f"reappraise-{next(_apps)}")
    async with serve(app) as url, openapi_client(url) as client:
        yield client


async def register(registry: httpx.AsyncClient, sim: Sim) -> tuple[bytes, httpx.Response]:
    """A v2 registration of a fresh instance key with a quote of the simulated TD (no log)."""
    key = Ed25519PrivateKey.generate()
    pubkey = key.public_key().public_bytes_raw()
    ppid = sim.platform.ppid
    challenge = bytes.fromhex((await registry.get("/challenge")).json()["nonce"])
    binding = report_data_for_v2(pubkey, ppid, challenge, None, None)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        quote = (await client.get(f"/attest/{binding.hex()}")).content
    assert quote_ppid(parse_quote(quote)).value == ppid
    body = {
        "instance_pubkey": pubkey.hex(),
        "ppid": ppid.hex(),
        "attestation_quote": base64.b64encode(quote).decode(),
        "operator": None,
        "owner": None,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(key, challenge, binding).hex(),
    }
    return pubkey, await registry.post("/register", json=body)


async def register_ok(registry: httpx.AsyncClient, sim: Sim, count: int = 1) -> list[bytes]:
    keys = []
    for _ in range(count):
        key, answer = await register(registry, sim)
        assert answer.status_code == 200, answer.text
        keys.append(key)
    return keys


async def record_of(registry: httpx.AsyncClient, key: bytes) -> dict[str, Any]:
    answer = await registry.get(f"/instance/{key.hex()}")
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


async def log_entry(registry: httpx.AsyncClient, index: int) -> bytes:
    """The entry (leaf data) at `index` of the registry's log."""
    answer = await registry.get("/log/entries", params={"start": index, "end": index + 1})
    assert answer.status_code == 200, answer.text
    (entry,) = answer.json()["entries"]
    assert entry["index"] == index
    data: bytes = entry["entry"].encode()
    return data


async def log_size(registry: httpx.AsyncClient) -> int:
    checkpoint = await registry.get("/log/checkpoint")
    assert checkpoint.status_code == 200, checkpoint.text
    return int(checkpoint.text.split("\n")[1])


def db_flags(db: DatabaseTarget) -> list[str]:
    if db.postgres_url is not None:
        return ["--db-url", db.postgres_url]
    return ["--db-path", str(db.sqlite_path)]


async def reappraise_cli(
    db: DatabaseTarget, sim: Sim, *flags: str, pccs_url: str | None = None
) -> tuple[int, dict[str, Any]]:
    """`tdx-registry reappraise` as a user runs it (its own event loop, on a thread); its exit
    status and its JSON summary."""
    argv = [
        "reappraise",
        *db_flags(db),
        "--pccs-url",
        pccs_url or sim.url,
        "--trusted-root-ca",
        str(sim.root_ca),
        "--any-measurement",
        "--log-level",
        "ERROR",
        *flags,
    ]
    out = StringIO()

    def run() -> int:
        with redirect_stdout(out):
            return main(argv)

    status = await asyncio.to_thread(run)
    summary: dict[str, Any] = json.loads(out.getvalue())
    return status, summary


def summary_counts(summary: dict[str, Any]) -> dict[str, int]:
    return {k: summary[k] for k in ("checked", "changed", "unchanged", "skipped", "failed")}


async def test_reappraise_refuses_a_platform_the_sim_moved_out_of_date(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    """Up to date at registration; after a TCB recovery, `reappraise` records the refusal (the
    policy accepts no OutOfDate) with the old verdict in the history and one log leaf per
    record (`"changes": ["verification"]`), with only one PCCS fetch set for all records; an
    unchanged pass writes nothing (no record, no leaf)."""
    async with (
        running_sim(tmp_path / "sim") as sim,
        running_registry(registry_settings(db_target, sim)) as registry,
    ):
        keys = await register_ok(registry, sim, 5)
        before = [await record_of(registry, key) for key in keys]
        size = await log_size(registry)
        assert size == 5
        assert {r["verification"]["tcb_status"] for r in before} == {"UpToDate"}
        assert all(r["verification"]["history"] == [] for r in before)
        assert all(r["verification"]["refused"] is None for r in before)

        status, summary = await reappraise_cli(db_target, sim)
        assert status == 0, summary
        assert summary_counts(summary) == {
            "checked": 5, "changed": 0, "unchanged": 5, "skipped": 0, "failed": 0
        }  # fmt: skip
        assert [await record_of(registry, key) for key in keys] == before
        assert await log_size(registry) == size

        sim.recover(days_ago=3)
        sim.pccs_requests.clear()
        status, summary = await reappraise_cli(db_target, sim)
        assert status == 0, summary
        assert summary_counts(summary)["changed"] == 5
        assert sim.pccs_requests == ONE_FETCH_SET
        for key, old in zip(keys, before, strict=True):
            record = await record_of(registry, key)
            verification = record["verification"]
            assert verification["tcb_status"] == "OutOfDate"
            assert verification["refused"].startswith(
                "policy: TCB status OutOfDate is not accepted"
            )
            assert verification["tcb_grace_until"] is None
            assert record["updated_at"] > old["updated_at"]
            assert verification["history"] == [
                {
                    "tcb_status": "UpToDate",
                    "advisory_ids": old["verification"]["advisory_ids"],
                    "tcb_grace_until": None,
                    "refused": None,
                    "skipped": False,
                    "verified_at": old["verification"]["verified_at"],
                    "replaced_at": record["updated_at"],
                }
            ]
            assert record["log_index"] >= size
            assert await log_entry(registry, record["log_index"]) == expected_entry(
                record, ["verification"]
            )
        assert await log_size(registry) == size + 5
        after = [await record_of(registry, key) for key in keys]

        status, summary = await reappraise_cli(db_target, sim)
        assert (status, summary["changed"], summary["unchanged"]) == (0, 0, 5)
        assert [await record_of(registry, key) for key in keys] == after
        assert await log_size(registry) == size + 5
    store = await PonyRecordStore.open(db_target)
    try:
        assert (await check_log_invariants(store)).size == size + 5
    finally:
        await store.close()


async def test_grace_days_keep_out_of_date_accepted_until_a_date(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    """With --tcb-grace-days the re-appraised verdict is OutOfDate with tcb_grace_until = the
    recovery's tcbDate + N days; a registration under the same policy shows it too, and one
    without grace is refused."""
    async with running_sim(tmp_path / "sim") as sim:
        async with running_registry(registry_settings(db_target, sim)) as registry:
            (key,) = await register_ok(registry, sim)
        tcb_date = sim.recover(days_ago=2)
        until = (tcb_date + timedelta(days=30)).isoformat()
        status, summary = await reappraise_cli(db_target, sim, "--tcb-grace-days", "30")
        assert (status, summary["changed"]) == (0, 1), summary
        graced = registry_settings(db_target, sim, policy=Policy(tcb_grace_days=30))
        async with running_registry(graced) as registry:
            verification = (await record_of(registry, key))["verification"]
            assert (verification["tcb_status"], verification["refused"]) == ("OutOfDate", None)
            assert verification["tcb_grace_until"] == until
            assert [h["tcb_status"] for h in verification["history"]] == ["UpToDate"]
            (new_key,) = await register_ok(registry, sim)
            new = (await record_of(registry, new_key))["verification"]
            assert (new["tcb_status"], new["tcb_grace_until"], new["history"]) == (
                "OutOfDate",
                until,
                [],
            )
        async with running_registry(registry_settings(db_target, sim)) as registry:
            _, refused = await register(registry, sim)
            assert refused.status_code == 401
            assert "OutOfDate is not accepted" in refused.json()["error"]


async def test_a_denied_advisory_makes_the_verdict_refused(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    async with running_sim(tmp_path / "sim", tcb_status="SWHardeningNeeded") as sim:
        async with running_registry(registry_settings(db_target, sim)) as registry:
            (key,) = await register_ok(registry, sim)
            assert (await record_of(registry, key))["verification"]["advisory_ids"] == [
                "INTEL-SA-00000"
            ]
        status, summary = await reappraise_cli(db_target, sim, "--deny-advisory", "INTEL-SA-00000")
        assert (status, summary["changed"]) == (0, 1), summary
        async with running_registry(registry_settings(db_target, sim)) as registry:
            verification = (await record_of(registry, key))["verification"]
        assert verification["tcb_status"] == "SWHardeningNeeded"
        assert verification["advisory_ids"] == ["INTEL-SA-00000"]
        assert verification["refused"].startswith("policy: ")
        assert "INTEL-SA-00000" in verification["refused"]
        assert verification["history"][0]["refused"] is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_pccs_down_exits_1_and_touches_no_record(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    async with running_sim(tmp_path / "sim") as sim:
        async with running_registry(registry_settings(db_target, sim)) as registry:
            keys = await register_ok(registry, sim, 3)
            before = [await record_of(registry, key) for key in keys]
        sim.recover()
        status, summary = await reappraise_cli(
            db_target, sim, pccs_url=f"http://127.0.0.1:{_closed_port()}"
        )
        assert status == 1
        assert summary["changed"] == 0
        assert summary["aborted"].startswith("the PCCS failed")
        assert summary["failed"] == 1
        async with running_registry(registry_settings(db_target, sim)) as registry:
            assert [await record_of(registry, key) for key in keys] == before


async def test_skipped_verdicts_are_left_alone_and_counted(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    async with running_sim(tmp_path / "sim") as sim:
        async with running_registry(registry_settings(db_target, sim)) as registry:
            (key,) = await register_ok(registry, sim)
        store = await PonyRecordStore.open(db_target)
        try:
            stored = await store.get(key)
            assert stored is not None
            now = datetime.now(UTC)
            skipped = replace(
                stored,
                instance_pubkey=b"\x01" * 32,
                verdict=Verdict(None, (), stored.verdict.mr_td, now, skipped=True),
            )
            skipped = await store.register(skipped.instance_pubkey, lambda _old: skipped)
        finally:
            await store.close()
        sim.recover()
        status, summary = await reappraise_cli(db_target, sim)
        assert status == 0
        assert summary_counts(summary) == {
            "checked": 2, "changed": 1, "unchanged": 0, "skipped": 1, "failed": 0
        }  # fmt: skip
        store = await PonyRecordStore.open(db_target)
        try:
            assert await store.get(skipped.instance_pubkey) == skipped
        finally:
            await store.close()


async def test_reappraise_every_runs_in_a_live_server_and_stops_on_shutdown(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    """The first pass runs about a period after start; a TCB recovery published after it reaches
    a later pass (the passes' collateral cache refreshes every period); shutdown stops it."""
    async with running_sim(tmp_path / "sim") as sim:
        settings = registry_settings(db_target, sim, reappraise_every=1.0)
        app = create_app(settings, name=f"reappraise-{next(_apps)}")
        async with serve(app) as url, openapi_client(url) as registry:
            task: asyncio.Task[None] = app.ctx.reappraisal
            assert not task.done()
            (key,) = await register_ok(registry, sim)
            assert sum(sim.pccs_requests.values()) == 4  # the registration's own cache
            for _ in range(100):  # the first pass: its cache fetches a set, nothing changes
                if sum(sim.pccs_requests.values()) >= 8:
                    break
                await asyncio.sleep(0.1)
            assert sum(sim.pccs_requests.values()) == 8
            await asyncio.sleep(0.2)
            assert (await record_of(registry, key))["verification"]["tcb_status"] == "UpToDate"
            sim.recover()  # a later pass fetches again (the cache's max age is the period)
            record: dict[str, Any] = {}
            for _ in range(100):
                record = await record_of(registry, key)
                if record["verification"]["tcb_status"] == "OutOfDate":
                    break
                await asyncio.sleep(0.1)
            assert record["verification"]["tcb_status"] == "OutOfDate"
            assert [h["tcb_status"] for h in record["verification"]["history"]] == ["UpToDate"]
        assert task.done()
        assert app.ctx.reappraisal is None


async def test_a_registration_in_between_wins_over_the_pass(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    """The pass writes only over the exact record it verified: a record that changed since it
    was read is not written (`superseded`), nor is a verdict already stored (another replica
    wrote it)."""
    async with running_sim(tmp_path / "sim") as sim:
        async with running_registry(registry_settings(db_target, sim)) as registry:
            (key,) = await register_ok(registry, sim)
        store = await PonyRecordStore.open(db_target)
        try:
            read = await store.get(key)
            assert read is not None
            now = datetime.now(UTC)
            verdict = replace(read.verdict, tcb_status="OutOfDate", verified_at=now)
            written: InstanceRecord = await store.register(key, reappraised(read, verdict, now))
            assert (written.verdict, written.updated_at) == (verdict, now)
            assert [past.tcb_status for past in written.verdict_history] == ["UpToDate"]
            with pytest.raises(RecordSuperseded):
                await store.register(key, reappraised(read, verdict, now))
            current = await store.get(key)
            assert current == written
            later = now + timedelta(seconds=1)
            with pytest.raises(VerdictAlreadyCurrent):
                await store.register(
                    key, reappraised(current, replace(verdict, verified_at=later), later)
                )
            assert await store.get(key) == written
        finally:
            await store.close()


def _verdict(status: str, when: datetime, **fields: Any) -> Verdict:
    return Verdict(status, ("INTEL-SA-00837",), bytes(48), when, skipped=False, **fields)


def test_the_verdict_history_keeps_the_last_64_differing_verdicts() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    record = InstanceRecord(
        instance_pubkey=b"\x02" * 32,
        ppid=b"\x03" * 16,
        attestation_quote=b"q",
        operator=None,
        owner=None,
        verdict=_verdict("UpToDate", t0),
        registered_at=t0,
        updated_at=t0,
    )
    same = record.with_verdict(_verdict("UpToDate", t0 + timedelta(hours=1)), now=t0)
    assert same.verdict_history == ()
    for i in range(1, VERDICT_HISTORY_LIMIT + 6):
        status = "OutOfDate" if i % 2 else "UpToDate"
        record = record.with_verdict(
            _verdict(status, t0 + timedelta(days=i)), now=t0 + timedelta(days=i)
        )
    history = record.verdict_history
    assert len(history) == VERDICT_HISTORY_LIMIT
    assert [p.replaced_at for p in history] == [
        t0 + timedelta(days=i) for i in range(6, VERDICT_HISTORY_LIMIT + 6)
    ]
    assert all(p.verified_at == p.replaced_at - timedelta(days=1) for p in history)


async def test_the_verdict_history_round_trips_through_the_store(
    db_target: DatabaseTarget,
) -> None:
    """Grace ends, refusals and times of replaced verdicts read back exactly."""
    t0 = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    graced = _verdict("OutOfDate", t0, tcb_grace_until=t0 + timedelta(days=30))
    refused = _verdict("OutOfDate", t0 + timedelta(days=31), refused="policy: no grace left")
    record = InstanceRecord(
        instance_pubkey=b"\x04" * 32,
        ppid=b"\x05" * 16,
        attestation_quote=b"q",
        operator=None,
        owner=None,
        verdict=graced,
        registered_at=t0,
        updated_at=t0,
    )
    later = t0 + timedelta(days=31)
    changed = replace(record.with_verdict(refused, now=later), updated_at=later)
    assert changed.verdict_history == (PastVerdict.of(graced, replaced_at=later),)
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(record.instance_pubkey, lambda _old: record)
        written = await store.register(record.instance_pubkey, lambda _old: changed)
        assert await store.get(record.instance_pubkey) == written
        assert replace(written, log_index=None) == changed
    finally:
        await store.close()


def test_a_registration_keeps_the_history_and_pushes_a_differing_verdict() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    stored = InstanceRecord(
        instance_pubkey=b"\x06" * 32,
        ppid=b"\x07" * 16,
        attestation_quote=b"q",
        operator=None,
        owner=None,
        verdict=_verdict("OutOfDate", t0, refused="policy: TCB status OutOfDate is not accepted"),
        registered_at=t0,
        updated_at=t0,
        verdict_history=(PastVerdict.of(_verdict("UpToDate", t0), replaced_at=t0),),
    )
    t1 = t0 + timedelta(days=1)
    fresh = replace(stored, verdict=_verdict("UpToDate", t1), updated_at=t1, verdict_history=())
    merged = merge_registration(stored, fresh)
    assert merged.verdict == fresh.verdict
    assert merged.verdict_history == (
        *stored.verdict_history,
        PastVerdict.of(stored.verdict, replaced_at=t1),
    )
    t2 = t1 + timedelta(hours=1)
    again = replace(fresh, verdict=_verdict("UpToDate", t2), updated_at=t2)
    assert merge_registration(merged, again).verdict_history == merged.verdict_history


async def test_the_background_loop_logs_a_failing_pass_and_runs_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`reappraise_forever`: waits a jittered period before each pass, survives a pass that
    raises (logged), and stops when cancelled."""
    waits: list[float] = []
    passes: list[int] = []
    third = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    async def run_pass() -> ReappraisalSummary:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("the first pass broke")
        if len(passes) == 3:
            third.set()
        return ReappraisalSummary()

    task = asyncio.create_task(reappraise_forever(run_pass, 10.0, sleep=sleep))
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(passes) >= 3
    assert all(10.0 <= w < 10.0 * (1 + JITTER) for w in waits)
    assert "re-appraisal pass failed" in caplog.text


class ExpiredPckChainVerifier:
    """Refuses every quote as tdx-verify does once the quote's PCK leaf certificate has expired
    (its own validity window check): a reason that names the time of the check."""

    def __init__(self, expired_at: datetime) -> None:
        self._window = Window(
            "pck_chain",
            "PCK leaf certificate",
            (expired_at - timedelta(days=2555)).timestamp(),
            expired_at.timestamp(),
            False,
            PckChainError,
        )

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote:
        self._window.check(now.timestamp())
        raise AssertionError("the window of an expired certificate passed")

    async def aclose(self) -> None:
        return None


async def test_a_refusal_naming_the_check_time_is_recorded_once_not_at_every_pass(
    db_target: DatabaseTarget,
) -> None:
    """A quote whose PCK certificate expired is refused at every pass with tdx-verify's
    "... expired at T (now N)": the refusal is one change (one history entry, one leaf), and
    later passes find it unchanged (no new leaf, no history growth)."""
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    instance = Instance()
    record = make_record(instance, at=t0)
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda _old: record)
        times = iter([t0 + timedelta(days=d) for d in (2, 3, 4)])
        reappraiser = Reappraiser(
            store, ExpiredPckChainVerifier(t0 + timedelta(days=1)), clock=lambda: next(times)
        )
        first = await reappraiser.run_pass()
        assert (first.changed, first.unchanged, first.failed) == (1, 0, 0)
        refused = await store.get(instance.pubkey)
        assert refused is not None
        assert len(refused.verdict_history) == 1
        size = (await store.log_checkpoint_state())[0]
        for _ in range(2):
            later = await reappraiser.run_pass()
            assert (later.changed, later.unchanged, later.failed) == (0, 1, 0)
        assert await store.get(instance.pubkey) == refused
        assert (await store.log_checkpoint_state())[0] == size
        assert refused.verdict.refused == (
            "pck_chain: PCK leaf certificate expired at 2026-12-02T00:00:00Z"
        )
    finally:
        await store.close()


async def test_a_background_pass_invalidates_the_read_cache_of_what_it_changed(
    tmp_path: Path, db_target: DatabaseTarget
) -> None:
    """Within one process reads follow writes (README, "Read cache"): a verdict the server's own
    pass changed is served at once, not after --read-cache-ttl."""
    async with running_sim(tmp_path / "sim") as sim:
        settings = registry_settings(db_target, sim, reappraise_every=1.0, read_cache_ttl=600)
        app = create_app(settings, name=f"reappraise-{next(_apps)}")
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as registry:
            (key,) = await register_ok(registry, sim)
            assert (await record_of(registry, key))["verification"]["tcb_status"] == "UpToDate"
            sim.recover()
            store = app.ctx.services.store
            for _ in range(100):  # until a pass has stored the new verdict
                stored = await store.get(key)
                if stored is not None and stored.verdict.tcb_status == "OutOfDate":
                    break
                await asyncio.sleep(0.1)
            assert stored is not None and stored.verdict.tcb_status == "OutOfDate"
            verification = (await record_of(registry, key))["verification"]
            assert verification["tcb_status"] == "OutOfDate"
            assert verification["refused"] is not None
