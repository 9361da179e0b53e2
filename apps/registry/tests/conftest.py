"""Backends for the store tests (REGISTRY_TEST_BACKEND=sqlite|postgres|all) and shared fixtures.

The PostgreSQL backend is a throwaway cluster made with `initdb` + `pg_ctl` in a temp dir
(run as `nobody` when the tests run as root), one fresh database per test.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg2  # type: ignore[import-untyped]  # no stubs in the lint env
import pytest
from hypothesis import settings

from tdx_registry import DatabaseTarget, DcapQuoteVerifier, QuoteVerifier, Settings, create_app
from tdx_service_kit.testing import serve

sys.path.insert(0, str(Path(__file__).parent))  # registry_helpers

from registry_helpers import FakeCache, Running

settings.register_profile("registry", max_examples=50, deadline=None)
settings.load_profile("registry")

_counter = itertools.count()


def selected_backends() -> list[str]:
    choice = os.environ.get("REGISTRY_TEST_BACKEND", "all")
    if choice not in ("sqlite", "postgres", "all"):
        raise pytest.UsageError("REGISTRY_TEST_BACKEND must be sqlite, postgres or all")
    return ["sqlite", "postgres"] if choice == "all" else [choice]


BACKEND_PARAMS = [
    pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [], id=name)
    for name in selected_backends()
]


@pytest.fixture
def app_name() -> str:
    return f"registry-test-{next(_counter)}"


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def running(tmp_path: Path, app_name: str, cache: FakeCache) -> Running:
    """`async with running(**settings) as client`: the registry on loopback, real SQLite store,
    DCAP verification through a fake collateral cache (or `verifier=`)."""

    @asynccontextmanager
    async def start(
        verifier: QuoteVerifier | None = None, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        overrides.setdefault("rate_limit", None)
        settings = Settings(
            database=DatabaseTarget(sqlite_path=tmp_path / "registry.db"), **overrides
        )
        app = create_app(settings, name=app_name, verifier=verifier or DcapQuoteVerifier(cache))
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            yield client

    return start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """A PostgreSQL server in a temp dir, trust auth on loopback, stopped at session end."""

    def __init__(self) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise RuntimeError(
                "initdb/pg_ctl not on PATH: install PostgreSQL or set REGISTRY_TEST_BACKEND=sqlite"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="registry-pg-"))
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="nobody")
            self._as_user = ["runuser", "-u", "nobody", "--"]
        data = self.dir / "data"
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )
        options = f"-k {self.dir} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )
        self.data = data

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as_user, *cmd], check=True, capture_output=True, timeout=60)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"registry_{next(_counter)}"
        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKEND_PARAMS)
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    """A fresh, empty database on each selected backend."""
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        return DatabaseTarget(postgres_url=cluster.create_database())
    return DatabaseTarget(sqlite_path=tmp_path / "registry.db")
