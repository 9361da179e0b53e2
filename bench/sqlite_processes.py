"""Several processes writing one SQLite file through the registry's store (the registry README's
"Replicas: several processes on one database"): commits per second of all of them together, the
errors (a "database is locked" past the busy timeout would be one) and the slowest commit.

Each of `--processes` child processes (default 1, 2 and 4 in turn) opens its own
`PonyRecordStore` on one fresh file in a temp dir, prepares `--per-process` records of distinct
instances, waits for the others, then registers them one after the other.

Run by hand: `hatch run bench:sqlite-processes [--processes 2] [--per-process 300]` (not CI).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path

from tdx_registry import DatabaseTarget, InstanceRecord, PonyRecordStore, StoreError, Verdict


@dataclass(frozen=True)
class Outcome:
    seconds: float
    errors: int
    slowest: float


def _record(now: datetime) -> InstanceRecord:
    return InstanceRecord(
        instance_pubkey=os.urandom(32),
        ppid=os.urandom(16),
        attestation_quote=os.urandom(5000),
        operator=None,
        owner=None,
        verdict=Verdict("UpToDate", (), bytes(48), now, False, bytes(48)),
        registered_at=now,
        updated_at=now,
    )


def _storing(record: InstanceRecord) -> Callable[[InstanceRecord | None], InstanceRecord]:
    """The merge of a new instance: store `record`."""
    return lambda _old: record


async def _write(path: Path, count: int, barrier: Barrier) -> Outcome:
    store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path))
    try:
        now = datetime.now(UTC)
        records = [_record(now) for _ in range(count)]
        barrier.wait()
        start = time.perf_counter()
        errors, slowest = 0, 0.0
        for record in records:
            began = time.perf_counter()
            try:
                await store.register(record.instance_pubkey, _storing(record))
            except StoreError:
                errors += 1
            slowest = max(slowest, time.perf_counter() - began)
        return Outcome(time.perf_counter() - start, errors, slowest)
    finally:
        await store.close()


def _child(
    path: Path, count: int, barrier: Barrier, results: multiprocessing.Queue[Outcome]
) -> None:
    results.put(asyncio.run(_write(path, count, barrier)))


def measure(processes: int, per_process: int, tmp: Path) -> tuple[float, int, float]:
    """(commits per second of all the processes together, errors, slowest commit in s)."""
    path = tmp / f"registry-{processes}-{os.urandom(4).hex()}.db"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.Queue[Outcome] = context.Queue()
    children = [
        context.Process(target=_child, args=(path, per_process, barrier, results))
        for _ in range(processes)
    ]
    # All the children open the file at once: the first to take the write lock creates the tables.
    for child in children:
        child.start()
    outcomes = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=60)
    wall = max(outcome.seconds for outcome in outcomes)
    return (
        processes * per_process / wall,
        sum(outcome.errors for outcome in outcomes),
        max(outcome.slowest for outcome in outcomes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, action="append")
    parser.add_argument("--per-process", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes or [1, 2, 4]:
            rate, errors, slowest = measure(processes, args.per_process, Path(tmp))
            print(
                f"{processes} process(es) x {args.per_process}: {rate:.0f} commits/s together, "
                f"{errors} errors, slowest commit {slowest * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
