"""End to end: two registry replicas on one database (PostgreSQL in the postgres cell, one
SQLite file otherwise) keep one Merkle log; `tdxctl registry audit` verifies each instance's
record against it through either replica, and catches a record rewritten in the database
behind the registries' back.

Real programs: tdx-sim (two TDs of one platform), two `tdx-registry` processes sharing the
database and the log key, two identity services (two instances, each registering through its
own replica), and `tdxctl`."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import procs
from tests.procs import Program, program
from tests.replicas import start_replicas

pytestmark = pytest.mark.e2e

READ_CACHE_TTL = 1.0
"""The registries' default GET /instance cache lifetime: a database edit shows after it."""


@dataclass
class Fleet:
    tmp: Path
    sim: Program
    replicas: tuple[Program, Program]
    identities: tuple[Program, Program]
    db_url: str | None

    def tdxctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "TDXCTL_TRUSTED_ROOT_CA": str(self.tmp / "sim-state" / "root_ca.pem"),
            "TDXCTL_PCCS_URL": self.sim.url,
        }
        return subprocess.run(
            [program("tdxctl"), *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def audit(self, replica: int, instance: str, state: Path) -> subprocess.CompletedProcess[str]:
        return self.tdxctl(
            "registry",
            "audit",
            "--registry",
            self.replicas[replica].url,
            "--instance",
            instance,
            "--state",
            str(state),
            "--json",
        )

    def rewrite_operator(self, instance: str, operator_pubkey: bytes) -> None:
        """Edit the instance's row directly in the database, as whoever runs it could."""
        sql = "UPDATE instances SET operator_pubkey = {p} WHERE pubkey = {p}"
        if self.db_url is None:
            with contextlib.closing(sqlite3.connect(self.tmp / "registry.db")) as db, db:
                done = db.execute(sql.format(p="?"), (operator_pubkey, instance))
                assert done.rowcount == 1
            return
        import psycopg2  # the postgres extra of the registry: present in that cell

        # closing() closes the connection; `pg` itself is one transaction, committed on leaving
        with contextlib.closing(psycopg2.connect(self.db_url)) as pg, pg:
            cursor = pg.cursor()
            cursor.execute(sql.format(p="%s"), (operator_pubkey, instance))
            assert cursor.rowcount == 1


@pytest.fixture
def fleet(tmp_path: Path, registry_db_url: str | None) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        # Both replicas get the same database, log key file and origin.
        started = start_replicas(stack, tmp_path, registry_db_url)
        sim, replicas = started.sim, started.replicas
        # A second TD of the same platform: its own sim (RTMR3) with a copy of the PKI.
        shutil.copytree(tmp_path / "sim-state" / "pki", tmp_path / "sim2-state" / "pki")
        sim2 = procs.sim(tmp_path, state=tmp_path / "sim2-state")
        stack.enter_context(procs.running(sim2))
        identities = (
            procs.identity(tmp_path, sim.url, replicas[0].url, STORAGE_PATH=str(tmp_path / "a")),
            procs.identity(tmp_path, sim2.url, replicas[1].url, STORAGE_PATH=str(tmp_path / "b")),
        )
        for ident in identities:
            stack.enter_context(procs.running(ident))
        yield Fleet(tmp_path, sim, replicas, identities, registry_db_url)


def _ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _instance(identity: Program) -> str:
    return str(httpx.get(identity.url + "/instance/pubkey").json()["pubkey"])


def test_replicas_keep_one_log_and_an_edited_record_fails_the_audit(fleet: Fleet) -> None:
    tmp = fleet.tmp
    keys = {name: tmp / f"{name}.pem" for name in ("op-a", "op-b", "owner-a", "intruder")}
    pubkeys = {
        name: _ok(fleet.tdxctl("keygen", str(path), "--json"))["pubkey"]
        for name, path in keys.items()
    }
    instances = [_instance(ident) for ident in fleet.identities]

    # Each instance registers through its own replica: operator on both, owner on the first.
    tokens = []
    for ident, operator in zip(fleet.identities, ("op-a", "op-b"), strict=True):
        registered = fleet.tdxctl(
            "operator", "register", "--identity", ident.url, "--key", str(keys[operator]), "--json"
        )
        tokens.append(_ok(registered)["owner_token"])
    owner = fleet.tdxctl(
        "owner",
        "register",
        "--identity",
        fleet.identities[0].url,
        "--key",
        str(keys["owner-a"]),
        f"--token={tokens[0]}",
        "--json",
    )
    _ok(owner)

    # Both replicas serve the same record (with its log index) and the same signed log.
    for instance in instances:
        records = [httpx.get(f"{r.url}/instance/{instance}").json() for r in fleet.replicas]
        assert records[0] == records[1]
        assert isinstance(records[0]["log_index"], int)
    sizes = set()
    for program_ in fleet.replicas:
        checkpoint = httpx.get(program_.url + "/log/checkpoint").text
        sizes.add(int(checkpoint.splitlines()[1]))
    assert len(sizes) == 1
    (size,) = sizes
    entries = httpx.get(fleet.replicas[1].url + f"/log/entries?start=0&end={size}").json()
    assert [e["index"] for e in entries["entries"]] == list(range(size))  # one sequence
    # The first registration of each instance (with its operator) and the owner's.
    changes = [
        (json.loads(e["entry"])["instance_pubkey"], json.loads(e["entry"])["changes"])
        for e in entries["entries"]
    ]
    assert changes[:2] == [(instances[0], ["instance"]), (instances[1], ["instance"])]
    assert len(changes) == 3 and changes[2][0] == instances[0] and "owner" in changes[2][1]

    # Audits through either replica pass, and stay consistent with what each auditor saw.
    states = {
        (replica, instance): tmp / f"audit-{replica}-{instance[:8]}.json"
        for replica in (0, 1)
        for instance in instances
    }
    for (replica, instance), state in states.items():
        summary = _ok(fleet.audit(replica, instance, state))
        assert summary["instance"] == instance
        assert summary["tree_size"] == size
        assert summary["trust_on_first_use"] is True
    for (replica, instance), state in states.items():
        summary = _ok(fleet.audit(replica, instance, state))
        assert summary["consistent_with_previous"] is True
        assert summary["trust_on_first_use"] is False

    # Whoever runs the database rewrites the first instance's operator behind the registries'
    # back: every auditor of that instance now fails, naming the field that left its leaf.
    target = instances[0]
    fleet.rewrite_operator(target, bytes.fromhex(pubkeys["intruder"]))
    time.sleep(READ_CACHE_TTL + 0.5)
    for replica in (0, 1):
        state = states[(replica, target)]
        before = state.read_bytes()
        failed = fleet.audit(replica, target, state)
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
        assert "operator" in failed.stderr, failed.stderr
        assert "leaf" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
        assert state.read_bytes() == before  # a failed audit leaves the remembered state
    # The other instance's record was not touched: its audit still passes.
    _ok(fleet.audit(1, instances[1], states[(1, instances[1])]))
