"""A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` + `pg_ctl` in a temp dir,
trust authentication on loopback only, run as the `postgres` user when root, stopped and
deleted afterwards.

`durable=False` (the tests) turns fsync off for speed; `durable=True` (the benchmarks) keeps
PostgreSQL's default durability, so a commit waits for its WAL flush as it would in production.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._programs import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
SUPERUSER = "tdx"
_COMMAND_TIMEOUT = 120


class PostgresUnavailable(RuntimeError):
    """initdb/pg_ctl are not installed, or the cluster would not start."""


def _pg_bin(tool: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        candidate = Path(directory) / tool
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise PostgresUnavailable(f"{tool} not found: scripts/setup installs PostgreSQL 15")
    return found


def _run(argv: list[str], user: str | None = None) -> None:
    full = ["runuser", "-u", user, "--", *argv] if user else argv
    try:
        subprocess.run(full, check=True, capture_output=True, timeout=_COMMAND_TIMEOUT)  # noqa: S603
    except subprocess.CalledProcessError as exc:
        raise PostgresUnavailable(
            f"{Path(argv[0]).name} failed: {exc.stderr.decode(errors='replace').strip()}"
        ) from None


STOP_MODES = ("smart", "fast", "immediate")
"""`pg_ctl stop -m`: wait for clients, roll back and disconnect them, or abort without a
shutdown checkpoint (crash recovery at the next start)."""


@dataclass
class PostgresCluster:
    """A running throwaway cluster on `127.0.0.1:port`; `create_database` makes a fresh one,
    `stop` and `start` take it down and bring it back on the same port with the same data (a
    database restart under its clients)."""

    port: int
    data: Path | None = None
    options: str = ""
    user: str | None = None
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "db") -> str:
        """A new empty database; returns its `postgresql://` URL."""
        name = f"{prefix}_{next(self._names)}"
        _run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name])
        return self.url(name)

    def _pg_ctl(self, *argv: str) -> None:
        if self.data is None:
            raise PostgresUnavailable("this cluster was not started here: no data directory")
        _run([_pg_bin("pg_ctl"), "-D", str(self.data), *argv], self.user)

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (`pg_ctl stop -m mode`, one of `STOP_MODES`) and wait until it is."""
        if mode not in STOP_MODES:
            raise ValueError(f"mode must be one of {', '.join(STOP_MODES)}")
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        """Start the stopped cluster again (same port, same data) and wait until it accepts
        connections."""
        if self.data is None:
            raise PostgresUnavailable("this cluster was not started here: no data directory")
        log = str(self.data.parent / "pg.log")
        self._pg_ctl("-l", log, "-w", "-o", self.options, "start")


@contextlib.contextmanager
def throwaway_postgres(*, durable: bool, port: int | None = None) -> Iterator[PostgresCluster]:
    """Start a fresh cluster on `port` (default: one the OS says is free), yield it, then stop
    it and delete its files."""
    user = "postgres" if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="tdx-pg-"))
    data = tmp / "data"
    if port is None:
        port = free_port()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    initdb = [_pg_bin("initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
    options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
    if not durable:
        initdb.append("--no-sync")
        options += " -c fsync=off"
    started = False
    try:
        _run(initdb, user)
        pg_log = str(tmp / "pg.log")
        _run([_pg_bin("pg_ctl"), "-D", str(data), "-l", pg_log, "-w", "-o", options, "start"], user)
        started = True
        yield PostgresCluster(port, data, options, user)
    finally:
        if started:  # stopped already when the caller stopped it and did not start it again
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                _run([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user)
        shutil.rmtree(tmp, ignore_errors=True)
