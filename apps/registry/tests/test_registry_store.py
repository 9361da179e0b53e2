"""The Pony record store on every selected backend: round trips, atomic check-and-write, races."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pony.orm import db_session
from registry_helpers import Instance, identity_for, make_log, workload

from tdx_measure import EventLog
from tdx_registry import (
    DatabaseTarget,
    InstanceRecord,
    PastVerdict,
    PonyRecordStore,
    RegistrationConflict,
    StoreError,
    Verdict,
    merge_registration,
)

T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_record(
    instance: Instance,
    operator: Ed25519PrivateKey | None = None,
    owner: Ed25519PrivateKey | None = None,
    *,
    at: datetime = T0,
    ppid: bytes | None = None,
) -> InstanceRecord:
    return InstanceRecord(
        instance_pubkey=instance.pubkey,
        ppid=instance.ppid if ppid is None else ppid,
        attestation_quote=b"quote-bytes-" + at.isoformat().encode(),
        operator=identity_for(instance.key, operator) if operator else None,
        owner=identity_for(instance.key, owner) if owner else None,
        verdict=Verdict(
            tcb_status="SWHardeningNeeded",
            advisory_ids=("INTEL-SA-00615", "INTEL-SA-00837"),
            mr_td=b"\x07" * 48,
            verified_at=at,
            skipped=False,
        ),
        registered_at=at,
        updated_at=at,
    )


async def test_unknown_instance_is_none(db_target: DatabaseTarget) -> None:
    store = await PonyRecordStore.open(db_target)
    try:
        assert await store.get(b"\x01" * 32) is None
    finally:
        await store.close()


async def test_record_round_trips_every_field(db_target: DatabaseTarget) -> None:
    instance, operator, owner = (
        Instance(),
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    record = make_record(instance, operator, owner)
    store = await PonyRecordStore.open(db_target)
    try:
        stored = await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        assert stored == replace(record, log_index=0)
        assert unlogged(await store.get(instance.pubkey)) == record
    finally:
        await store.close()


async def test_event_log_history_and_rtmr3_round_trip(db_target: DatabaseTarget) -> None:
    instance = Instance()
    first = make_record(instance)
    record = replace(
        first,
        verdict=replace(first.verdict, rtmr3=b"\x33" * 48),
        event_log=make_log().to_json(),
        event_log_history=tuple(make_log().to_json() for _ in range(3)),
    )
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        assert unlogged(await store.get(instance.pubkey)) == record
        replaced = replace(record, event_log=None, event_log_history=())
        await store.register(instance.pubkey, lambda old: merge_registration(old, replaced))
        stored = await store.get(instance.pubkey)
        assert stored is not None and stored.event_log is None
        assert stored.event_log_history == (*record.event_log_history, record.event_log)
    finally:
        await store.close()


async def _execute(store: PonyRecordStore, sql: str) -> None:
    """Run `sql` in a transaction of the store's own connection (as an operator editing the
    database would)."""

    @db_session  # type: ignore[untyped-decorator]
    def execute() -> None:
        store._db.execute(sql)

    await asyncio.get_running_loop().run_in_executor(store._executor, execute)


def _parsing_refused(*args: object, **kwargs: object) -> EventLog:
    raise AssertionError("reading a record parsed its event log")


@pytest.mark.parametrize("with_workload", [True, False], ids=["workload", "no-workload-yet"])
async def test_workload_is_stored_with_the_log_and_read_without_parsing_it(
    db_target: DatabaseTarget, monkeypatch: pytest.MonkeyPatch, with_workload: bool
) -> None:
    instance = Instance()
    events = (workload("configure"), workload("expose")) if with_workload else ()
    log = make_log(*events)
    record = replace(make_record(instance), event_log=log.to_json(), workload=log.workload)
    assert (record.workload is not None) is with_workload
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        monkeypatch.setattr(EventLog, "from_json", _parsing_refused)
        assert unlogged(await store.get(instance.pubkey)) == record
    finally:
        await store.close()


async def test_row_stored_before_the_workload_column_reads_the_workload_from_its_log(
    db_target: DatabaseTarget,
) -> None:
    """A NULL `workload` (a row the previous registry wrote) is read from the row's log, until
    the instance's next registration stores it."""
    instance = Instance()
    log = make_log(workload("configure"))
    record = replace(make_record(instance), event_log=log.to_json(), workload=log.workload)
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        await _execute(store, "UPDATE instances SET workload = NULL")
        assert unlogged(await store.get(instance.pubkey)) == record
    finally:
        await store.close()


async def test_stored_workload_that_does_not_decode_is_a_store_error_until_rewritten(
    db_target: DatabaseTarget,
) -> None:
    instance = Instance()
    log = make_log(workload("configure"))
    record = replace(make_record(instance), event_log=log.to_json(), workload=log.workload)
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        await _execute(store, """UPDATE instances SET workload = '{"type": "boot"}'""")
        with pytest.raises(StoreError, match="stored workload does not decode"):
            await store.get(instance.pubkey)
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        assert unlogged(await store.get(instance.pubkey)) == record
    finally:
        await store.close()


async def test_record_without_identities_and_skipped_verdict_round_trips(
    db_target: DatabaseTarget,
) -> None:
    instance = Instance(ppid=b"\xaa" * 384)
    record = make_record(instance)
    record = replace(
        record, verdict=replace(record.verdict, tcb_status=None, advisory_ids=(), skipped=True)
    )
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, record))
        assert unlogged(await store.get(instance.pubkey)) == record
    finally:
        await store.close()


async def test_refused_merge_leaves_the_record_unchanged(db_target: DatabaseTarget) -> None:
    instance = Instance()
    first = make_record(instance, Edkey := Ed25519PrivateKey.generate())
    other = make_record(instance, Ed25519PrivateKey.generate(), at=T0 + timedelta(hours=1))
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, first))
        with pytest.raises(RegistrationConflict, match="another operator"):
            await store.register(instance.pubkey, lambda old: merge_registration(old, other))
        assert unlogged(await store.get(instance.pubkey)) == first
        assert Edkey is not None
    finally:
        await store.close()


async def test_same_data_again_refreshes_quote_and_verdict_keeping_first_time(
    db_target: DatabaseTarget,
) -> None:
    instance, operator, owner = (
        Instance(),
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    first = make_record(instance, operator)
    later = make_record(instance, operator, owner, at=T0 + timedelta(days=2))
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, lambda old: merge_registration(old, first))
        await store.register(instance.pubkey, lambda old: merge_registration(old, later))
        stored = await store.get(instance.pubkey)
        assert stored == replace(later, registered_at=T0, log_index=1)
    finally:
        await store.close()


async def test_records_survive_reopening(db_target: DatabaseTarget) -> None:
    instance = Instance()
    record = make_record(instance, Ed25519PrivateKey.generate())
    store = await PonyRecordStore.open(db_target)
    await store.register(instance.pubkey, lambda old: merge_registration(old, record))
    await store.close()
    reopened = await PonyRecordStore.open(db_target)
    try:
        assert unlogged(await reopened.get(instance.pubkey)) == record
    finally:
        await reopened.close()


def _merging(record: InstanceRecord) -> Callable[[InstanceRecord | None], InstanceRecord]:
    """The merge rule applied to `record`."""
    return lambda old: merge_registration(old, record)


async def _race(stores: list[PonyRecordStore], instance: Instance) -> list[object]:
    records = [make_record(instance, Ed25519PrivateKey.generate()) for _ in stores]
    attempts = [
        store.register(instance.pubkey, _merging(record))
        for store, record in zip(stores, records, strict=True)
    ]
    return await asyncio.gather(*attempts, return_exceptions=True)


async def test_concurrent_registrations_in_one_store_have_one_winner(
    db_target: DatabaseTarget,
) -> None:
    store = await PonyRecordStore.open(db_target)
    try:
        for _ in range(5):
            instance = Instance()
            results = await _race([store] * 4, instance)
            winners = [r for r in results if isinstance(r, InstanceRecord)]
            losers = [r for r in results if isinstance(r, RegistrationConflict)]
            assert len(winners) == 1 and len(losers) == 3, results
            assert await store.get(instance.pubkey) == winners[0]
    finally:
        await store.close()


async def test_concurrent_registrations_from_separate_stores_have_one_winner(
    db_target: DatabaseTarget,
) -> None:
    """Two stores = two connections (as two registry processes would have): the database
    itself, not this process's executor, must make exactly one registration win."""
    stores = [await PonyRecordStore.open(db_target) for _ in range(3)]
    try:
        for _ in range(8):
            instance = Instance()
            results = await _race(stores, instance)
            winners = [r for r in results if isinstance(r, InstanceRecord)]
            losers = [r for r in results if isinstance(r, RegistrationConflict)]
            assert len(winners) == 1 and len(losers) == 2, results
            assert await stores[0].get(instance.pubkey) == winners[0]
    finally:
        for store in stores:
            await store.close()


def test_database_target_requires_an_absolute_sqlite_path() -> None:
    with pytest.raises(ValueError, match="absolute"):
        DatabaseTarget(sqlite_path=Path("registry.db"))


def test_database_target_hides_the_password() -> None:
    target = DatabaseTarget(postgres_url="postgresql://u:hunter2@db.example:5433/reg")
    assert target.describe() == "postgresql://db.example:5433/reg"
    with pytest.raises(ValueError):
        DatabaseTarget(postgres_url="mysql://x/y")


async def test_interleaved_registrations_cannot_both_win(db_target: DatabaseTarget) -> None:
    """Force both transactions to read "no record" before either writes (where the database
    lets them: SQLite's immediate transaction already serialises them): the unique key plus the
    retried check must still leave exactly one winner."""
    instance = Instance()
    barrier = threading.Barrier(2, timeout=1.0)
    first_pass: set[int] = set()

    def merge_after_barrier(
        record: InstanceRecord,
    ) -> Callable[[InstanceRecord | None], InstanceRecord]:
        def merge(old: InstanceRecord | None) -> InstanceRecord:
            me = threading.get_ident()
            if me not in first_pass:
                first_pass.add(me)
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
            return merge_registration(old, record)

        return merge

    stores = [await PonyRecordStore.open(db_target) for _ in range(2)]
    try:
        records = [make_record(instance, Ed25519PrivateKey.generate()) for _ in stores]
        results = await asyncio.gather(
            *(
                store.register(instance.pubkey, merge_after_barrier(record))
                for store, record in zip(stores, records, strict=True)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, InstanceRecord)]
        assert len(winners) == 1, results
        assert isinstance(results[results.index(winners[0]) ^ 1], RegistrationConflict)
        assert await stores[0].get(instance.pubkey) == winners[0]
        if db_target.postgres_url is not None:
            assert not barrier.broken, "both transactions should have read before writing"
    finally:
        for store in stores:
            await store.close()


async def test_database_failure_is_a_store_error(tmp_path: Path) -> None:
    target = DatabaseTarget(sqlite_path=tmp_path / "r.db")
    store = await PonyRecordStore.open(target)
    try:
        with sqlite3.connect(tmp_path / "r.db") as conn:
            conn.execute("DROP TABLE instances")
        with pytest.raises(StoreError, match="reading the record failed"):
            await store.get(b"\x01" * 32)
        record = make_record(Instance())
        with pytest.raises(StoreError, match="could not be committed"):
            await store.register(record.instance_pubkey, lambda old: record)
    finally:
        await store.close()


_OLD_SCHEMA = """CREATE TABLE "instances" (
  "pubkey" VARCHAR(64) NOT NULL PRIMARY KEY, "ppid" BLOB NOT NULL,
  "attestation_quote" BLOB NOT NULL, "operator_pubkey" BLOB, "operator_instance_signature" BLOB,
  "operator_identity_signature" BLOB, "owner_pubkey" BLOB, "owner_instance_signature" BLOB,
  "owner_identity_signature" BLOB, "tcb_status" TEXT, "advisory_ids" JSON NOT NULL,
  "mr_td" BLOB NOT NULL, "verified_at" DATETIME NOT NULL, "verification_skipped" BOOLEAN NOT NULL,
  "registered_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL)"""


def _readme_sqlite_migration() -> list[str]:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("SQLite:\n```sql\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


async def test_database_of_the_previous_schema_works_after_the_readme_migration(
    tmp_path: Path,
) -> None:
    """A record written before the event-log columns existed reads back without a log, and the
    instance can then register with one."""
    path = tmp_path / "old.db"
    instance = Instance()
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_SCHEMA)
        when = "2026-01-01 00:00:00.000000"
        conn.execute(
            "INSERT INTO instances (pubkey, ppid, attestation_quote, advisory_ids, mr_td, "
            "verified_at, verification_skipped, registered_at, updated_at) "
            "VALUES (?, ?, ?, '[]', ?, ?, 0, ?, ?)",
            (instance.pubkey.hex(), instance.ppid, b"q", b"\x07" * 48, when, when, when),
        )
        for statement in _readme_sqlite_migration():
            conn.execute(statement)
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path))
    try:
        old = await store.get(instance.pubkey)
        assert old is not None
        assert old.log_index == 0  # the backfill at open gave the old record its first leaf
        assert (old.event_log, old.event_log_history, old.verdict.rtmr3) == (None, (), None)
        assert (old.binding_version, old.challenge, old.proof_of_possession) == (1, None, None)
        new = replace(make_record(instance), event_log=make_log().to_json())
        await store.register(instance.pubkey, lambda stored: merge_registration(stored, new))
        assert await store.get(instance.pubkey) == replace(
            new,
            registered_at=old.registered_at,
            verdict_history=(PastVerdict.of(old.verdict, replaced_at=new.updated_at),),
            log_index=1,
        )
    finally:
        await store.close()


def unlogged(record: InstanceRecord | None) -> InstanceRecord | None:
    """`record` without its `log_index` (the log's own tests check that)."""
    return None if record is None else replace(record, log_index=None)


def _storing(record: InstanceRecord) -> Callable[[InstanceRecord | None], InstanceRecord]:
    """A merge that stores `record` whatever is stored."""
    return lambda old: record


async def test_sqlite_store_commits_through_a_durable_wal(tmp_path: Path) -> None:
    """WAL journal with synchronous=FULL: each commit fsyncs the WAL before returning."""
    path = tmp_path / "r.db"
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path))
    try:
        record = make_record(Instance())
        await store.register(record.instance_pubkey, lambda old: record)

        @db_session  # type: ignore[untyped-decorator]
        def pragmas() -> tuple[str, int]:
            db = store._db  # the store's own connection, on its own thread
            return (
                str(db.select("* FROM pragma_journal_mode")[0]),
                int(db.select("* FROM pragma_synchronous")[0]),
            )

        mode, synchronous = await asyncio.get_running_loop().run_in_executor(
            store._executor, pragmas
        )
        assert mode.lower() == "wal"
        assert synchronous == 2  # FULL
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 1


async def test_acknowledged_registration_is_committed(db_target: DatabaseTarget) -> None:
    """`register` returns only after the commit: another connection already sees the row."""
    store, other = await PonyRecordStore.open(db_target), await PonyRecordStore.open(db_target)
    try:
        records = [make_record(Instance()) for _ in range(12)]
        stored = await asyncio.gather(
            *(store.register(r.instance_pubkey, _storing(r)) for r in records)
        )
        assert [replace(r, log_index=None) for r in stored] == records
        assert sorted(r.log_index for r in stored if r.log_index is not None) == list(range(12))
        for record in records:
            assert unlogged(await other.get(record.instance_pubkey)) == record
    finally:
        await store.close()
        await other.close()


async def test_refused_registration_does_not_affect_concurrent_ones(
    db_target: DatabaseTarget,
) -> None:
    store = await PonyRecordStore.open(db_target)
    try:
        good = [make_record(Instance()) for _ in range(4)]
        refused = make_record(Instance())

        def refuse(old: InstanceRecord | None) -> InstanceRecord:
            raise RegistrationConflict("refused for the test")

        results = await asyncio.gather(
            *(store.register(r.instance_pubkey, _storing(r)) for r in good[:2]),
            store.register(refused.instance_pubkey, refuse),
            *(store.register(r.instance_pubkey, _storing(r)) for r in good[2:]),
            return_exceptions=True,
        )
        assert isinstance(results[2], RegistrationConflict)
        assert [
            replace(r, log_index=None) for r in results if isinstance(r, InstanceRecord)
        ] == good
        assert await store.get(refused.instance_pubkey) is None
        for record in good:
            assert unlogged(await store.get(record.instance_pubkey)) == record
    finally:
        await store.close()


async def test_registration_failing_at_write_fails_alone(db_target: DatabaseTarget) -> None:
    """A registration the database refuses fails alone: nothing of it is stored, and the
    registrations sent with it are."""
    store = await PonyRecordStore.open(db_target)
    try:
        good = [make_record(Instance()) for _ in range(3)]
        unwritable = replace(make_record(Instance()), ppid="not bytes")  # type: ignore[arg-type]
        results = await asyncio.gather(
            store.register(good[0].instance_pubkey, lambda old: good[0]),
            store.register(unwritable.instance_pubkey, lambda old: unwritable),
            *(store.register(r.instance_pubkey, _storing(r)) for r in good[1:]),
            return_exceptions=True,
        )
        assert isinstance(results[1], Exception) and not isinstance(results[1], InstanceRecord)
        assert [
            replace(r, log_index=None) for r in results if isinstance(r, InstanceRecord)
        ] == good
        assert await store.get(unwritable.instance_pubkey) is None
        for record in good:
            assert unlogged(await store.get(record.instance_pubkey)) == record
    finally:
        await store.close()


async def test_concurrent_registrations_of_one_instance_apply_in_order(
    db_target: DatabaseTarget,
) -> None:
    """Sent together, the second registration of an instance merges onto the first."""
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    first = make_record(instance, operator)
    second = make_record(instance, operator, Ed25519PrivateKey.generate(), at=T0 + timedelta(1))
    store = await PonyRecordStore.open(db_target)
    try:
        results = await asyncio.gather(
            store.register(instance.pubkey, lambda old: merge_registration(old, first)),
            store.register(instance.pubkey, lambda old: merge_registration(old, second)),
        )
        assert results[0] == replace(first, log_index=0)
        assert results[1] == replace(second, registered_at=first.registered_at, log_index=1)
        assert await store.get(instance.pubkey) == results[1]
    finally:
        await store.close()
