"""Backends for the store tests (REGISTRY_TEST_BACKEND=sqlite|postgres|all) and shared fixtures.

The PostgreSQL backend is a throwaway cluster (`tdx_service_kit.testing.throwaway_postgres`),
one fresh database per test.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from tdx_registry import DatabaseTarget, DcapQuoteVerifier, QuoteVerifier, Settings, create_app
from tdx_service_kit.testing import PostgresCluster, serve, throwaway_postgres

sys.path.insert(0, str(Path(__file__).parent))  # registry_helpers

from registry_helpers import FakeCache, Running, openapi_client

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
    DCAP verification through a fake collateral cache (or `verifier=`), on the real clock (or
    `clock=`); every answer is checked against the registry's OpenAPI document."""

    @asynccontextmanager
    async def start(
        verifier: QuoteVerifier | None = None,
        clock: Callable[[], datetime] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        overrides.setdefault("rate_limit", None)
        settings = Settings(
            database=DatabaseTarget(sqlite_path=tmp_path / "registry.db"), **overrides
        )
        app = create_app(
            settings,
            name=app_name,
            verifier=verifier or DcapQuoteVerifier(cache),
            clock=clock or (lambda: datetime.now(UTC)),
        )
        async with serve(app) as url, openapi_client(url) as client:
            yield client

    return start


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with throwaway_postgres(durable=False) as cluster:
        yield cluster


@pytest.fixture(params=BACKEND_PARAMS)
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    """A fresh, empty database on each selected backend."""
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        return DatabaseTarget(postgres_url=cluster.create_database("registry"))
    return DatabaseTarget(sqlite_path=tmp_path / "registry.db")
