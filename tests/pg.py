"""A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir) for the postgres backend."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.procs import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)


def _pg_bin(tool: str) -> str:
    for d in PG_BIN_CANDIDATES:
        if (Path(d) / tool).exists():
            return str(Path(d) / tool)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"{tool} not found: scripts/setup installs PostgreSQL 15")
    return found


def _as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yield a `postgresql://` URL of a fresh cluster; stop and delete it afterwards."""
    user = "postgres" if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="tdx-pg-"))
    data = tmp / "data"
    port = free_port()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    try:
        subprocess.run(
            _as_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "tdx",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                user,
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_user(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(tmp / "pg.log"),
                    "-w",
                    "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start",
                ],
                user,
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tdx", "registry"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://tdx@127.0.0.1:{port}/registry"
    finally:
        subprocess.run(
            _as_user([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
