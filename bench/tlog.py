"""The registry log's cost against its size: append, inclusion and consistency proofs on a
SQLite log grown to 10^3, 10^4, 10^5 and 10^6 leaves.

The log lives in the tables the record store creates (`PonyRecordStore.open` on a temp file);
it is grown between the measured sizes by bulk-loading leaves directly (their nodes from
`tdx_merkle.appended_nodes`, inserted in big transactions through `sqlite3`), so that reaching
10^6 takes seconds, not hours of registrations. At each size, every operation runs `--samples`
times inside a transaction of the store's database, through the registry's own code
(`tdx_registry.log_store`): an append (head read, siblings read in one query, leaf and nodes
inserted and flushed, then rolled back so the size stays put: the commit's fsync is left out,
it does not depend on the size) and proofs of random leaves / sizes. Printed side by side:
median times, rows read per operation, and each median's ratio to the 10^3 one next to
log2(n)/log2(10^3), what O(log n) allows.

Run by hand: `hatch run bench:tlog [--samples N] [--max-size N]` (a few minutes; not in CI).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pony.orm import db_session, flush, rollback

from tdx_merkle import append_siblings, appended_nodes, leaf_hash
from tdx_registry import DatabaseTarget, PonyRecordStore
from tdx_registry import log_store as tlog

SIZES = (1_000, 10_000, 100_000, 1_000_000)
BULK_BATCH = 100_000


def _entry(index: int) -> str:
    """A synthetic leaf entry (the log's cost does not depend on what the entries say)."""
    return f'{{"changes":["instance"],"i":{index},"v":1}}'


def bulk_grow(path: Path, start: int, end: int, frontier: dict[int, bytes]) -> None:
    """Append leaves `start` to `end - 1` straight into the log tables; `frontier[level]` is
    the latest complete node of each level (all `append_siblings` ever needs)."""
    if start >= end:
        return
    conn = sqlite3.connect(path)
    try:
        index = start
        while index < end:
            stop = min(end, index + BULK_BATCH)
            leaves: list[tuple[int, bytes, str, str]] = []
            nodes: list[tuple[int, int, bytes]] = []
            for i in range(index, stop):
                entry = _entry(i)
                leaf = leaf_hash(entry.encode())
                siblings = [frontier[level] for level, _ in append_siblings(i)]
                leaves.append((i, leaf, entry, f"{i:064x}"))
                for (level, node_index), value in appended_nodes(i, leaf, siblings):
                    nodes.append((level, node_index, value))
                    frontier[level] = value
            with conn:
                conn.executemany(
                    "INSERT INTO log_leaves (idx, leaf_hash, entry, instance_pubkey) "
                    "VALUES (?, ?, ?, ?)",
                    leaves,
                )
                conn.executemany("INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
                conn.execute("UPDATE log_head SET size = ? WHERE id = 1", (stop,))
            index = stop
            print(f"  grown to {stop:>9,} leaves", file=sys.stderr, flush=True)
    finally:
        conn.close()


def frontier_of(path: Path, size: int) -> dict[int, bytes]:
    """The latest complete node of each level in a log of `size` leaves."""
    frontier: dict[int, bytes] = {}
    conn = sqlite3.connect(path)
    try:
        for level in range(size.bit_length()):
            index = (size >> level) - 1
            if index >= 0:
                row = conn.execute(
                    "SELECT hash FROM log_nodes WHERE level = ? AND idx = ?", (level, index)
                ).fetchone()
                frontier[level] = bytes(row[0])
    finally:
        conn.close()
    return frontier


@dataclass(frozen=True)
class Figures:
    """Median seconds and mean rows read of each operation at one size (appends: over
    `samples` consecutive ones, committed, timed without the commit)."""

    size: int
    append: float
    append_rows: float
    inclusion: float
    inclusion_rows: float
    consistency: float
    consistency_rows: float


def _measure(store: PonyRecordStore, size: int, samples: int, rng: random.Random) -> Figures:
    """Runs on the store's database thread."""
    db, tables = store._db, store._log
    rows: list[int] = []

    def timed(operation: Callable[[], object], *, keep: bool = False) -> tuple[float, float]:
        times: list[float] = []
        counts: list[int] = []
        for _ in range(samples):
            rows.clear()
            with db_session:
                began = time.perf_counter()
                operation()
                times.append(time.perf_counter() - began)
                if not keep:
                    rollback()
            counts.append(sum(rows) + 1)  # + the head row
        return statistics.median(times), statistics.mean(counts)

    def append() -> None:
        index = tlog.head_size(tables)
        tlog.append(db, tables, _entry(index), f"{index:064x}", on_read=rows.append)
        flush()

    def inclusion() -> None:
        tlog.inclusion(db, tables, rng.randrange(size), size, on_read=rows.append)

    def consistency() -> None:
        tlog.consistency(db, tables, rng.randrange(1, size + 1), size, on_read=rows.append)

    append_time, append_rows = timed(append, keep=True)  # committed: the next ones grow on it
    inclusion_time, inclusion_rows = timed(inclusion)
    consistency_time, consistency_rows = timed(consistency)
    return Figures(
        size,
        append_time,
        append_rows,
        inclusion_time,
        inclusion_rows,
        consistency_time,
        consistency_rows,
    )


async def run(samples: int, max_size: int) -> list[Figures]:
    sizes = [size for size in SIZES if size <= max_size]
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bench-tlog-") as tmp:
        path = Path(tmp) / "registry.db"
        store = await PonyRecordStore.open(DatabaseTarget(sqlite_path=path))
        try:
            grown = 0
            rng = random.Random(1)
            for size in sizes:
                print(f"growing the log to {size:,} leaves", file=sys.stderr, flush=True)
                began = time.perf_counter()
                bulk_grow(path, grown, size, frontier_of(path, grown))
                grown = size
                print(
                    f"  {time.perf_counter() - began:.1f} s; measuring", file=sys.stderr, flush=True
                )
                figures = await asyncio.get_running_loop().run_in_executor(
                    store._executor, _measure, store, size, samples, rng
                )
                results.append(figures)
                grown += samples  # the measured appends were committed
        finally:
            await store.close()
    return results


def report(results: list[Figures]) -> str:
    base = results[0]
    lines = [
        f"{'leaves':>9} | {'append':>9} {'rows':>4} {'ratio':>5} | {'inclusion':>9} {'rows':>4} "
        f"{'ratio':>5} | {'consist.':>9} {'rows':>4} {'ratio':>5} | log2(n)/log2(10^3)"
    ]
    for f in results:
        lines.append(
            f"{f.size:>9,} | {f.append * 1e6:>7.0f}us {f.append_rows:>4.1f} "
            f"{f.append / base.append:>5.2f} | {f.inclusion * 1e6:>7.0f}us "
            f"{f.inclusion_rows:>4.1f} {f.inclusion / base.inclusion:>5.2f} | "
            f"{f.consistency * 1e6:>7.0f}us {f.consistency_rows:>4.1f} "
            f"{f.consistency / base.consistency:>5.2f} | "
            f"{math.log2(f.size) / math.log2(base.size):.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=300, help="runs per operation and size")
    parser.add_argument("--max-size", type=int, default=SIZES[-1], help="largest log size")
    args = parser.parse_args()
    print(report(asyncio.run(run(args.samples, args.max_size))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
