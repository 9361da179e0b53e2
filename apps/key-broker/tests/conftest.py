"""Fixtures of the key broker's tests: store backends (REGISTRY_TEST_BACKEND=sqlite|postgres|
all, as the registry's), the simulated TDX platform and its PCCS served in-process, and the
broker served in-process with full DCAP verification against the sim's root CA."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sanic import Sanic

from tdx_kbs import DatabaseTarget
from tdx_service_kit.testing import PostgresCluster, throwaway_postgres

sys.path.insert(0, str(Path(__file__).parent))  # kbs_helpers

from kbs_helpers import Broker, Sim, SimRunner, start_broker, start_sim

Sanic.test_mode = True
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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with throwaway_postgres(durable=False) as cluster:
        yield cluster


@pytest.fixture(params=BACKEND_PARAMS)
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    """A fresh, empty database on each selected backend."""
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        return DatabaseTarget(postgres_url=cluster.create_database("kbs"))
    return DatabaseTarget(sqlite_path=tmp_path / "kbs.db")


@pytest.fixture
def sim_runner(tmp_path: Path) -> SimRunner:
    """`async with sim_runner(debug_td=..., tcb_status=...) as sim`: a sim platform + PCCS."""

    @asynccontextmanager
    async def run(**options: Any) -> AsyncIterator[Sim]:
        async with start_sim(tmp_path / "sim-state", f"sim-{next(_counter)}", **options) as sim:
            yield sim

    return run


@pytest.fixture
async def sim(sim_runner: SimRunner) -> AsyncIterator[Sim]:
    async with sim_runner() as running:
        yield running


@pytest.fixture
async def broker(sim: Sim, tmp_path: Path) -> AsyncIterator[Broker]:
    """The broker on loopback trusting `sim`, SQLite store in `tmp_path`."""
    async with start_broker(sim, tmp_path, f"kbs-test-{next(_counter)}") as running:
        yield running


@pytest.fixture
def start(sim: Sim, tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Broker]]:
    """`async with start(**overrides) as broker`: a broker trusting `sim` with overrides."""

    def run(**overrides: Any) -> AbstractAsyncContextManager[Broker]:
        return start_broker(sim, tmp_path, f"kbs-test-{next(_counter)}", **overrides)

    return run
