"""Several processes on one SQLite file: the store's busy timeout makes a writer wait for
another process's write lock instead of failing "database is locked"; a lock held past it is
`StoreBusy`, answered 503 with `Retry-After` (README, "Storage")."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pony.orm import db_session
from registry_helpers import FakeCache, Instance, identity_for

from tdx_registry import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    DatabaseTarget,
    DcapQuoteVerifier,
    InstanceRecord,
    PonyRecordStore,
    Settings,
    StoreBusy,
    Verdict,
    create_app,
)
from tdx_service_kit.testing import serve

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)

_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@contextlib.contextmanager
def write_lock_held(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds SQLite's write lock on `path` (BEGIN IMMEDIATE) for `seconds`
    from the moment this yields."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.wait(timeout=seconds + 30)
    assert holder.returncode == 0


def make_record(instance: Instance) -> InstanceRecord:
    return InstanceRecord(
        instance_pubkey=instance.pubkey,
        ppid=instance.ppid,
        attestation_quote=b"quote-bytes",
        operator=identity_for(instance.key, Instance().key),
        owner=None,
        verdict=Verdict(
            tcb_status="UpToDate",
            advisory_ids=(),
            mr_td=b"\x07" * 48,
            verified_at=T0,
            skipped=False,
        ),
        registered_at=T0,
        updated_at=T0,
    )


async def _busy_timeout_ms(store: PonyRecordStore) -> int:
    @db_session  # type: ignore[untyped-decorator]
    def read() -> int:
        return int(store._db.select("* FROM pragma_busy_timeout")[0])

    return await asyncio.get_running_loop().run_in_executor(store._executor, read)


async def test_the_store_sets_its_documented_busy_timeout(tmp_path: Path) -> None:
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=tmp_path / "r.db"))
    try:
        assert await _busy_timeout_ms(store) == int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)
    finally:
        await store.close()
    with pytest.raises(ValueError, match="busy_timeout"):
        await PonyRecordStore.open(
            DatabaseTarget(sqlite_path=tmp_path / "r.db"), sqlite_busy_timeout=0
        )


async def test_a_write_waits_for_another_process_lock_then_commits(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path))
    try:
        record = make_record(Instance())
        now = datetime.now(UTC)
        with write_lock_held(path, 1.5):
            started = time.monotonic()
            stored = await store.register(record.instance_pubkey, lambda old: record)
            issued = await store.issue_challenge(
                b"\x01" * 32, now + timedelta(seconds=60), now=now, max_outstanding=10
            )
            waited = time.monotonic() - started
        assert stored.operator == record.operator
        assert issued is True
        assert waited >= 1.0  # it waited for the lock (released after 1.5 s) instead of failing
        assert await store.get(record.instance_pubkey) == stored
        assert await store.consume_challenge(b"\x01" * 32, now=now) is True
    finally:
        await store.close()


async def test_a_lock_held_past_the_busy_timeout_is_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path), sqlite_busy_timeout=0.2)
    try:
        record = make_record(Instance())
        now = datetime.now(UTC)
        with write_lock_held(path, 3.0):
            with pytest.raises(StoreBusy, match=r"locked by another writer for more than 0\.2 s"):
                await store.register(record.instance_pubkey, lambda old: record)
            with pytest.raises(StoreBusy, match="locked"):
                await store.consume_challenge(b"\x02" * 32, now=now)
            # WAL: reads do not wait for the writer
            assert await store.get(record.instance_pubkey) is None
        # Nothing was stored, and the store works again once the lock is released.
        assert await store.get(record.instance_pubkey) is None
        stored = await store.register(record.instance_pubkey, lambda old: record)
        assert await store.get(record.instance_pubkey) == stored
    finally:
        await store.close()


async def test_store_busy_is_503_with_retry_after(tmp_path: Path, app_name: str) -> None:
    path = tmp_path / "r.db"
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path), sqlite_busy_timeout=0.2)
    settings = Settings(database=DatabaseTarget(sqlite_path=path), rate_limit=None)
    app = create_app(settings, name=app_name, store=store, verifier=DcapQuoteVerifier(FakeCache()))
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            with write_lock_held(path, 3.0):
                busy = await client.get("/challenge")
            after = await client.get("/challenge")
    finally:
        await store.close()
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "1"
    reason = busy.json()["error"]
    assert "locked by another writer" in reason and "nothing was stored" in reason
    assert "Traceback" not in busy.text
    assert after.status_code == 200, after.text
