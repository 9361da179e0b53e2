"""End to end, the short form of `bench/soak.py`: mixed load (v2 registrations of distinct
instances from a fleet of simulated machines, GETs of their records, verified log proofs)
against two `tdx-registry` replicas on one PostgreSQL, while one replica is killed with
SIGKILL and started again, and while PostgreSQL is stopped and started again.

It asserts the soak's targets but resident memory's: every acknowledged registration is stored
exactly once (on both replicas, one log leaf, the record's `log_index`), no 5xx and no
unanswered request outside the fault windows (`bench/soak.py` defines them), no 4xx, no answer
that disagrees with what was stored, and each fault ends with successes on the replicas it hit.
Resident memory over so short a run is printed, and only bounded leniently (a replica's last
process may not double from its first seconds to its last): flat within 10% is the long form's
target (`hatch run bench:soak`).

It needs PostgreSQL in every cell, and starts a cluster of its own even in the PostgreSQL
cell: it restarts that cluster, which the session's other tests must not see."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from bench.soak import Plan, Soak
from tdx_service_kit.testing import throwaway_postgres
from tests.replicas import start_replicas

pytestmark = pytest.mark.e2e

LOAD_SECONDS = 24.0
"""Of load: the kill at 20% of it, the PostgreSQL restart at 55%, each down 1.5 s."""
RSS_LENIENT_BOUND = 1.0
"""The short form's bound on a replica's resident memory change (+100%)."""


def test_no_acknowledged_registration_is_lost_under_a_replica_kill_and_a_database_restart(
    tmp_path: Path,
) -> None:
    with throwaway_postgres(durable=False) as cluster, contextlib.ExitStack() as stack:
        started = start_replicas(
            stack, tmp_path, cluster.create_database("soak"), registry_flags=("--no-rate-limit",)
        )
        soak = Soak(started.replicas, cluster, started.sim_state, platforms=12, workers=3)
        report = soak.run(Plan(seconds=LOAD_SECONDS, down=1.5), rss_bound=RSS_LENIENT_BOUND)
        print("\n".join(report.lines()))

    assert [w.name for w in report.windows] == ["SIGKILL replica 1", "PostgreSQL restart"]
    for window in report.windows:
        assert window.recovered is not None and window.end is not None, window
    # The kill was seen: the killed replica left requests unanswered in its window.
    kill = report.windows[0]
    assert any(r.status is None and kill.covers(r, report.margin) for r in report.requests)
    assert report.acked > 10, report.lines()
    assert report.lost == [], report.lines()
    assert report.outside() == [], report.lines()
    assert report.client_errors() == [], report.lines()
    assert report.anomalies == [], report.lines()
    assert set(report.rss) == {0, 1}
    assert report.failures() == [], report.lines()
