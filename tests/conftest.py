"""Fixtures that start the real sim, registry and identity service on loopback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tdx_service_kit.testing import PostgresCluster, throwaway_postgres
from tests import procs
from tests.procs import Program


def _backend() -> str:
    backend = os.environ.get("REGISTRY_TEST_BACKEND", "sqlite")
    if backend not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"REGISTRY_TEST_BACKEND must be sqlite or postgres, not {backend}")
    return backend


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster | None]:
    """The session's PostgreSQL cluster when the postgres backend is selected, else None."""
    if _backend() != "postgres":
        yield None
        return
    with throwaway_postgres(durable=False) as cluster:
        yield cluster


@pytest.fixture
def registry_db_url(pg_cluster: PostgresCluster | None) -> str | None:
    """A fresh database for one test on the postgres backend (None: SQLite in tmp_path)."""
    if pg_cluster is None:
        return None
    return pg_cluster.create_database("t")


@dataclass
class Stack:
    tmp: Path
    sim: Program
    registry: Program
    identity: Program
    db_url: str | None

    def restart(self, *names: str) -> None:
        for name in names:
            prog: Program = getattr(self, name)
            prog.stop()
            prog.start()


@pytest.fixture
def make_stack(tmp_path: Path, registry_db_url: str | None) -> Iterator[Callable[..., Stack]]:
    """Start sim, registry (trusting the sim root unless told not to) and identity service."""
    stacks: list[contextlib.ExitStack] = []
    built: list[Stack] = []

    def make(
        sim_flags: Sequence[str] = (),
        trust_sim_root: bool = True,
        identity_env: dict[str, str] | None = None,
        registry_env: dict[str, str] | None = None,
    ) -> Stack:
        exit_stack = contextlib.ExitStack()
        stacks.append(exit_stack)
        sim = procs.sim(tmp_path, sim_flags)
        exit_stack.enter_context(procs.running(sim))
        root = tmp_path / "sim-state" / "root_ca.pem"
        reg = procs.registry(
            tmp_path,
            sim.url,
            root if trust_sim_root else None,
            registry_db_url,
            **(registry_env or {}),
        )
        exit_stack.enter_context(procs.running(reg))
        ident = procs.identity(tmp_path, sim.url, reg.url, **(identity_env or {}))
        exit_stack.enter_context(procs.running(ident))
        built.append(Stack(tmp_path, sim, reg, ident, registry_db_url))
        return built[-1]

    yield make
    for s in reversed(stacks):
        s.close()
    for stack in built:
        procs.stop_front(stack.identity)  # a stopped identity service leaves its front serving


pytest_plugins = ["tests.workload_support"]
