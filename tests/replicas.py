"""Two `tdx-registry` replicas on one database, with the simulated platform they trust: the
start-up shared by the end-to-end tests of replicas (`test_registry_replicas.py`,
`test_registry_audit_flow.py`, `test_registry_soak.py`) and by `bench/soak.py`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests import procs
from tests.procs import Program


@dataclass(frozen=True)
class Replicas:
    """The running sim (its state in `sim_state`, its root CA in `root_ca`) and two registry
    replicas sharing one database, one log key file and one log origin."""

    sim: Program
    sim_state: Path
    root_ca: Path
    replicas: tuple[Program, Program]


def start_replicas(
    stack: contextlib.ExitStack,
    tmp: Path,
    db_url: str | None,
    *,
    registry_flags: Sequence[str] = (),
    **registry_env: str,
) -> Replicas:
    """Start the sim (state in `tmp/sim-state`), then two replicas on `db_url` (None: one SQLite
    file in `tmp`, WAL mode), each stopped when `stack` closes (replicas first)."""
    sim = procs.sim(tmp)
    stack.enter_context(procs.running(sim))
    state = tmp / "sim-state"
    root = state / "root_ca.pem"
    # procs.registry puts the SQLite file and the log key in `tmp`: both replicas share them.
    replicas = (
        procs.registry(tmp, sim.url, root, db_url, flags=registry_flags, **registry_env),
        procs.registry(tmp, sim.url, root, db_url, flags=registry_flags, **registry_env),
    )
    for replica in replicas:
        stack.enter_context(procs.running(replica))
    return Replicas(sim, state, root, replicas)
