"""A throwaway PostgreSQL cluster for the benchmarks: initdb + pg_ctl in a temp dir, run as the
`postgres` user when root, stopped and deleted afterwards.

Unlike the test cluster (`tests/pg.py`, `fsync=off` for speed), this one keeps PostgreSQL's
default durability (fsync and synchronous commit on): a commit waits for its WAL flush, as it
would in production, so write throughput is measured with the cost a registry really pays.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._common import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)


class PostgresUnavailable(RuntimeError):
    """initdb/pg_ctl are not installed or the cluster would not start."""


def _pg_bin(tool: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        if (Path(directory) / tool).exists():
            return str(Path(directory) / tool)
    found = shutil.which(tool)
    if found is None:
        raise PostgresUnavailable(f"{tool} not found: scripts/setup installs PostgreSQL 15")
    return found


def _run(argv: list[str], user: str | None) -> None:
    full = ["runuser", "-u", user, "--", *argv] if user else argv
    try:
        subprocess.run(full, check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        raise PostgresUnavailable(
            f"{Path(argv[0]).name} failed: {exc.stderr.decode(errors='replace').strip()}"
        ) from None


@contextlib.contextmanager
def throwaway_cluster(*, durable: bool = True) -> Iterator[str]:
    """Yield the `postgresql://` URL of a fresh database on loopback; `durable=False` turns
    fsync off (as the tests do) to show what durability costs."""
    user = "postgres" if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="tdx-bench-pg-"))
    data = tmp / "data"
    port = free_port()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
    if not durable:
        options += " -c fsync=off"
    started = False
    try:
        _run([_pg_bin("initdb"), "-D", str(data), "-U", "tdx", "-A", "trust", "-E", "UTF8"], user)
        log = str(tmp / "pg.log")
        _run([_pg_bin("pg_ctl"), "-D", str(data), "-l", log, "-w", "-o", options, "start"], user)
        started = True
        _run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tdx", "registry"], None
        )
        yield f"postgresql://tdx@127.0.0.1:{port}/registry"
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailable):
                _run([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user)
        shutil.rmtree(tmp, ignore_errors=True)
