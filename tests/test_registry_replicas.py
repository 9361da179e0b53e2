"""End to end: two `tdx-registry` processes on one database (PostgreSQL in the postgres cell;
one SQLite file in WAL mode with the store's busy timeout otherwise, what the registry's README
says SQLite supports), both serving reads and writes.

Concurrent conflicting registrations of one fresh instance (same instance key and PPID, each
with its own operator), sent to both replicas at once, over several rounds: exactly one
binding wins (200), every other is 403 naming the rule, both replicas then serve the same
record with the winner's operator, and the log holds exactly one leaf for the instance. A
challenge one replica issued is accepted by the other exactly once. A write lock held on the
database by someone else delays registrations on both replicas instead of failing them.

Every registration body is built here as an identity service builds it: a challenge from the
replica it is sent to, a genuine sim quote over `report_data_for_v2`, the v2 identity
signatures and the instance key's proof of possession, with the TD's RTMR3 event log."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_report_data import (
    IdentityInfo,
    prove_possession,
    report_data_for_v2,
    sign_identity_v2,
    sign_instance_v2,
)
from tests import procs
from tests.procs import Program
from tests.replicas import start_replicas

pytestmark = pytest.mark.e2e

ROUNDS = 5
"""Races run, each on a fresh instance, so that a lucky interleaving cannot pass."""
PER_REPLICA = 4
"""Conflicting registrations sent to each replica per round."""
CONFLICT = "this instance is registered with another operator"
"""The merge rule a losing registration is refused with (403)."""
HTTP_TIMEOUT = 60.0


@dataclass
class Fleet:
    tmp: Path
    sim: Program
    replicas: tuple[Program, Program]
    identity: Program
    db_url: str | None
    ppid: bytes

    def event_log(self) -> str:
        """The TD's RTMR3 event log as its identity service serves it (it matches the sim's
        current RTMR3, which every quote of the sim carries)."""
        r = httpx.get(self.identity.url + "/instance/eventlog", timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return r.text

    def quote(self, report_data: bytes) -> bytes:
        r = httpx.get(f"{self.sim.url}/attest/{report_data.hex()}", timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return r.content


@pytest.fixture
def fleet(tmp_path: Path, registry_db_url: str | None) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        started = start_replicas(stack, tmp_path, registry_db_url)
        sim, replicas = started.sim, started.replicas
        # The TD's identity service only measures its boot into the sim's RTMR3 here: the test
        # sends every registration itself, for instance keys of its own.
        identity = procs.identity(tmp_path, sim.url, replicas[0].url)
        stack.callback(procs.stop_front, identity)  # once it stopped: the front it left
        stack.enter_context(procs.running(identity))
        ppid = quote_ppid(parse_quote(_get_quote(sim, bytes(64)), allow_zero_padding=True)).value
        yield Fleet(tmp_path, sim, replicas, identity, registry_db_url, ppid)


def _get_quote(sim: Program, report_data: bytes) -> bytes:
    r = httpx.get(f"{sim.url}/attest/{report_data.hex()}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.content


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _challenge(replica: Program) -> bytes:
    r = httpx.get(replica.url + "/challenge", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return bytes.fromhex(r.json()["nonce"])


def _body(
    fleet: Fleet,
    challenge: bytes,
    instance_key: Ed25519PrivateKey,
    operator_key: Ed25519PrivateKey | None,
    event_log: str,
) -> dict[str, Any]:
    """A v2 registration of `instance_key` (with `operator_key` as its operator, or none)."""
    instance = _raw(instance_key)
    operator: IdentityInfo | None = None
    if operator_key is not None:
        operator = sign_identity_v2(
            instance_key,
            "operator",
            _raw(operator_key),
            sign_instance_v2(operator_key, "operator", instance),
        )
    report_data = report_data_for_v2(instance, fleet.ppid, challenge, operator, None)
    return {
        "instance_pubkey": instance.hex(),
        "ppid": fleet.ppid.hex(),
        "attestation_quote": base64.b64encode(fleet.quote(report_data)).decode(),
        "operator": None if operator is None else operator.to_object(),
        "owner": None,
        "event_log": event_log,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(instance_key, challenge, report_data).hex(),
    }


def _post_at_once(
    sends: list[tuple[Program, dict[str, Any]]], answered_at: list[float] | None = None
) -> list[httpx.Response]:
    """POST every body to its replica, all released at the same moment (one thread each);
    `answered_at` receives the `time.monotonic()` of each answer."""
    barrier = threading.Barrier(len(sends))

    def send(item: tuple[Program, dict[str, Any]]) -> httpx.Response:
        replica, body = item
        with httpx.Client(base_url=replica.url, timeout=HTTP_TIMEOUT) as client:
            barrier.wait(timeout=HTTP_TIMEOUT)
            answer = client.post("/register", json=body)
        if answered_at is not None:
            answered_at.append(time.monotonic())
        return answer

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(send, sends))


def _error(r: httpx.Response) -> str:
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], r.text
    return str(body["error"])


def _records(fleet: Fleet, instance: bytes) -> list[dict[str, Any]]:
    """GET /instance/{instance} from each replica (each answer 200)."""
    answers = [
        httpx.get(f"{replica.url}/instance/{instance.hex()}", timeout=HTTP_TIMEOUT)
        for replica in fleet.replicas
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return [answer.json() for answer in answers]


def _log_entries(fleet: Fleet) -> list[dict[str, Any]]:
    """The whole log, read from each replica: the same checkpoint size and the same leaves."""
    sizes = {
        int(httpx.get(replica.url + "/log/checkpoint", timeout=HTTP_TIMEOUT).text.splitlines()[1])
        for replica in fleet.replicas
    }
    assert len(sizes) == 1, sizes
    (size,) = sizes
    if size == 0:
        return []
    query = f"/log/entries?start=0&end={size}"
    found = [
        httpx.get(replica.url + query, timeout=HTTP_TIMEOUT).json()["entries"]
        for replica in fleet.replicas
    ]
    assert found[0] == found[1]
    assert [e["index"] for e in found[0]] == list(range(size))
    return [{"index": e["index"], **json.loads(e["entry"])} for e in found[0]]


def _leaves_of(fleet: Fleet, instance: bytes) -> list[dict[str, Any]]:
    return [e for e in _log_entries(fleet) if e["instance_pubkey"] == instance.hex()]


def test_conflicting_registrations_on_two_replicas_have_one_winner_everywhere(
    fleet: Fleet,
) -> None:
    event_log = fleet.event_log()
    for _ in range(ROUNDS):
        instance_key = Ed25519PrivateKey.generate()
        instance = _raw(instance_key)
        # One body per (replica, operator): the challenge from the replica it is sent to.
        sends: list[tuple[Program, dict[str, Any]]] = []
        operators: list[Ed25519PrivateKey] = []
        for _ in range(PER_REPLICA):
            for replica in fleet.replicas:
                operator = Ed25519PrivateKey.generate()
                operators.append(operator)
                body = _body(fleet, _challenge(replica), instance_key, operator, event_log)
                sends.append((replica, body))

        results = _post_at_once(sends)

        statuses = [r.status_code for r in results]
        winners = [i for i, r in enumerate(results) if r.status_code == 200]
        assert len(winners) == 1, [(r.status_code, r.text) for r in results]
        assert statuses.count(403) == len(sends) - 1, [(r.status_code, r.text) for r in results]
        for r in results:
            if r.status_code == 403:
                assert CONFLICT in _error(r)
        (winner,) = winners
        winning_body = sends[winner][1]

        # Both replicas serve the same record: the winner's operator, challenge and proof.
        records = _records(fleet, instance)
        assert records[0] == records[1]
        record = records[0]
        assert record["operator"] == winning_body["operator"]
        assert record["operator"]["pubkey"] == _raw(operators[winner]).hex()
        assert record["challenge"] == winning_body["challenge"]
        assert record["proof_of_possession"] == winning_body["instance_signature"]
        assert record["ppid"] == fleet.ppid.hex()

        # The log holds exactly one leaf for the instance, the winner's, which the record names.
        (leaf,) = _leaves_of(fleet, instance)
        assert leaf["changes"] == ["instance"]
        assert leaf["record"]["operator"] == winning_body["operator"]
        assert leaf["index"] == record["log_index"]


def test_a_challenge_from_one_replica_is_accepted_by_the_other_exactly_once(
    fleet: Fleet,
) -> None:
    event_log = fleet.event_log()
    for issuer, acceptor in ((0, 1), (1, 0)):
        instance_key = Ed25519PrivateKey.generate()
        instance = _raw(instance_key)
        body = _body(fleet, _challenge(fleet.replicas[issuer]), instance_key, None, event_log)

        # The same body, four times at once to the replica that did not issue its challenge.
        results = _post_at_once([(fleet.replicas[acceptor], body)] * 4)
        assert sorted(r.status_code for r in results) == [200, 401, 401, 401], [
            (r.status_code, r.text) for r in results
        ]
        for r in results:
            if r.status_code == 401:
                assert "challenge unknown, expired or already used" in _error(r)
        # ... and then to the issuer: spent there too.
        again = httpx.post(
            fleet.replicas[issuer].url + "/register", json=body, timeout=HTTP_TIMEOUT
        )
        assert again.status_code == 401, again.text
        assert "challenge unknown, expired or already used" in _error(again)

        records = _records(fleet, instance)
        assert records[0] == records[1]
        assert records[0]["challenge"] == body["challenge"]
        assert len(_leaves_of(fleet, instance)) == 1


@contextlib.contextmanager
def _database_write_lock(fleet: Fleet) -> Iterator[None]:
    """Someone else holds the database's write lock: on SQLite an immediate transaction
    (the file's one writer), on PostgreSQL the log head's row lock every registration takes."""
    if fleet.db_url is None:
        with contextlib.closing(
            sqlite3.connect(fleet.tmp / "registry.db", isolation_level=None)
        ) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                db.execute("COMMIT")
        return
    import psycopg2  # the postgres extra of the registry: present in that cell

    with contextlib.closing(psycopg2.connect(fleet.db_url)) as pg:
        cursor = pg.cursor()
        cursor.execute("SELECT * FROM log_head FOR UPDATE")
        try:
            yield
        finally:
            pg.commit()


def test_registrations_wait_for_a_held_write_lock_instead_of_failing(fleet: Fleet) -> None:
    event_log = fleet.event_log()
    held = 2.0
    sends: list[tuple[Program, dict[str, Any]]] = []
    for _ in range(2):
        for replica in fleet.replicas:
            body = _body(fleet, _challenge(replica), Ed25519PrivateKey.generate(), None, event_log)
            sends.append((replica, body))
    outcome: list[list[httpx.Response]] = []
    answered_at: list[float] = []

    def post() -> None:
        outcome.append(_post_at_once(sends, answered_at))

    poster = threading.Thread(target=post)
    with _database_write_lock(fleet):
        poster.start()
        time.sleep(held)
        assert answered_at == []  # none could commit while the lock is held
        released = time.monotonic()
    poster.join(timeout=HTTP_TIMEOUT)
    (results,) = outcome
    # Every registration waited for the lock (no "database is locked", no 5xx) and then won.
    assert [r.status_code for r in results] == [200] * len(sends), [
        (r.status_code, r.text) for r in results
    ]
    assert len(answered_at) == len(sends) and min(answered_at) >= released
    for _, body in sends:
        records = _records(fleet, bytes.fromhex(body["instance_pubkey"]))
        assert records[0] == records[1]
        assert records[0]["challenge"] == body["challenge"]
