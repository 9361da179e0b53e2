"""Registrations per second through the registry's record store alone: no HTTP, no signature
checks, so the figure is the write path's (transactions, commits, fsyncs) and not the CPU's.

`--concurrency` callers (default 16, as wrk's connections in `bench/run.py`) register one
instance over and over for `--seconds`, on SQLite in a temp dir and on a throwaway PostgreSQL
with its default durability (`tdx_service_kit.testing.throwaway_postgres`). `--against REV`
measures the store of git revision REV the same way and prints this checkout's rate against it
(each measurement runs in a child interpreter, which imports the registry from REV's sources
when asked to).

Run by hand: `hatch run bench:store [--against REV]` (not part of CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.run import BACKENDS, registry_of_revision
from tdx_registry import (
    DatabaseTarget,
    InstanceRecord,
    PonyRecordStore,
    Verdict,
    merge_registration,
)
from tdx_service_kit.testing import throwaway_postgres


async def _register_for(target: str, seconds: float, concurrency: int) -> float:
    """Registrations per second of `concurrency` callers re-registering one instance."""
    database = (
        DatabaseTarget(postgres_url=target)
        if target.startswith("postgresql://")
        else DatabaseTarget(sqlite_path=Path(target))
    )
    now = datetime.now(UTC)
    record = InstanceRecord(
        instance_pubkey=os.urandom(32),
        ppid=os.urandom(16),
        attestation_quote=os.urandom(5000),
        operator=None,
        owner=None,
        verdict=Verdict("UpToDate", (), bytes(48), now, False, bytes(48)),
        registered_at=now,
        updated_at=now,
        event_log='{"events": [], "format": "tdx-measure/eventlog/v1"}',
    )
    store = await PonyRecordStore.open(database)
    done = 0
    try:
        await store.register(record.instance_pubkey, lambda old: merge_registration(old, record))
        start = time.perf_counter()
        deadline = start + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await store.register(
                    record.instance_pubkey, lambda old: merge_registration(old, record)
                )
                done += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)
    finally:
        await store.close()


def _measure(backend: str, tmp: Path, pythonpath: str | None, args: argparse.Namespace) -> float:
    """Run one measurement in a child interpreter (importing the store from `pythonpath`)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            cluster = stack.enter_context(throwaway_postgres(durable=True))
            target = cluster.create_database("registry")
        else:
            target = str(tmp / f"registry-{os.urandom(4).hex()}.db")
        argv = [sys.executable, "-m", "bench.store", "--child", target]
        argv += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"bench: the store measurement failed:\n{out.stderr}")
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="callers at once")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--against", metavar="REV", help="also measure the store of REV")
    parser.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(asyncio.run(_register_for(args.child, args.seconds, args.concurrency)))
        return 0
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="tdx-bench-store-") as name:
        tmp = Path(name)
        against = None if args.against is None else registry_of_revision(args.against, tmp / "rev")
        print(f"{'store registrations/s':36} {'this':>8} {args.against or '':>10} {'ratio':>7}")
        for backend in backends:
            this = _measure(backend, tmp, None, args)
            if against is None:
                print(f"{backend:36} {this:8.0f}")
                continue
            other = _measure(backend, tmp, str(against), args)
            print(f"{backend:36} {this:8.0f} {other:10.0f} {this / other:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
