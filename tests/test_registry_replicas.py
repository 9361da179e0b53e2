"""End to end: two `tdx-registry` processes on one database (PostgreSQL in the postgres cell;
one SQLite file in WAL mode with the store's busy timeout otherwise, what the registry's README
says SQLite supports), both serving reads and writes.

Concurrent conflicting registrations of one fresh instance (same instance key and PPID, each
with its own operator), sent to both replicas at once, over several rounds: exactly one
binding wins (200), every other is 403 naming the rule, both replicas then serve the same
record with the winner's operator, and the log holds exactly one leaf for the instance. A
challenge one replica issued is accepted by the other exactly once. A write lock held on the
database by someone else delays registrations on both replicas instead of failing them. Each
test runs again on one registry of two worker processes (`--workers 2`), both its "replicas":
each connection goes to whichever worker accepts it.

Every registration body is built here as an identity service builds it: a challenge from the
replica it is sent to, a genuine sim quote over `report_data_for_v2`, the v2 identity
signatures and the instance key's proof of possession, with the TD's RTMR3 event log."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
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
from tdx_service_kit import WORKER_DIED_EXIT_STATUS
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


@pytest.fixture(params=["two replicas", "one registry of two workers"])
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, registry_db_url: str | None
) -> Iterator[Fleet]:
    """Two replicas; or one `tdx-registry --workers 2`, named twice: each request then goes to
    whichever worker accepts its connection, and the same rules must hold."""
    with _fleet(tmp_path, registry_db_url, workers=request.param != "two replicas") as started:
        yield started


@pytest.fixture
def workers_fleet(tmp_path: Path, registry_db_url: str | None) -> Iterator[Fleet]:
    """One `tdx-registry --workers 2 --reappraise-every 1`, named twice."""
    with _fleet(tmp_path, registry_db_url, workers=True, flags=["--reappraise-every", "1"]) as f:
        yield f


@contextlib.contextmanager
def _fleet(
    tmp_path: Path, db_url: str | None, *, workers: bool, flags: Sequence[str] = ()
) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        if workers:
            sim = procs.sim(tmp_path)
            stack.enter_context(procs.running(sim))
            root = tmp_path / "sim-state" / "root_ca.pem"
            registry = procs.registry(
                tmp_path, sim.url, root, db_url, flags=["--workers", "2", *flags]
            )
            stack.enter_context(procs.running(registry))
            replicas = (registry, registry)
        else:
            started = start_replicas(stack, tmp_path, db_url, registry_flags=flags)
            sim, replicas = started.sim, started.replicas
        # The TD's identity service only measures its boot into the sim's RTMR3 here: the test
        # sends every registration itself, for instance keys of its own.
        identity = procs.identity(tmp_path, sim.url, replicas[0].url)
        stack.callback(procs.stop_front, identity)  # once it stopped: the front it left
        stack.enter_context(procs.running(identity))
        ppid = quote_ppid(parse_quote(_get_quote(sim, bytes(64)), allow_zero_padding=True)).value
        yield Fleet(tmp_path, sim, replicas, identity, db_url, ppid)


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


def _log_records(program: Program) -> list[dict[str, Any]]:
    lines = program.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _metric(text: str, name: str, labels: str) -> float:
    """The value of `name{labels}` in a Prometheus exposition (0.0 when absent)."""
    prefix = f"{name}{{{labels}}} "
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) <= 1, values
    return values[0] if values else 0.0


def test_a_registry_of_two_workers_serves_from_both_sums_their_metrics_and_stops(
    workers_fleet: Fleet,
) -> None:
    fleet = workers_fleet
    registry = fleet.replicas[0]
    event_log = fleet.event_log()
    registered = 0
    served_by: set[int] = set()
    for _ in range(6):  # until both workers have served a registration (new connections each)
        sends = [
            (registry, _body(fleet, _challenge(registry), Ed25519PrivateKey.generate(), None,
                             event_log))
            for _ in range(6)
        ]  # fmt: skip
        results = _post_at_once(sends)
        assert [r.status_code for r in results] == [200] * len(sends), [r.text for r in results]
        registered += len(sends)
        served_by = {
            r["worker"]
            for r in _log_records(registry)
            if r.get("path") == "/register" and r.get("status") == 200
        }
        if served_by == {0, 1}:
            break
    assert served_by == {0, 1}

    for _ in range(4):  # whichever worker answers the scrape shows both workers' counts
        text = httpx.get(
            registry.url + "/metrics", timeout=HTTP_TIMEOUT, headers={"Connection": "close"}
        ).text
        posts = 'method="POST",route="/register",status="200"'
        assert _metric(text, "tdx_registry_http_requests_total", posts) == registered
        verified = _metric(
            text, "tdx_registry_quote_verifications_total", 'result="verified",step=""'
        )
        assert verified == registered

    # The background re-appraisal runs in worker 0 only (one pass at a time on the database).
    records = _log_records(registry)
    started = [r for r in records if r["message"] == "background re-appraisal on"]
    assert [r["worker"] for r in started] == [0]

    (launched,) = [r for r in records if r["message"] == "workers started"]
    pids = [int(pid) for pid in launched["pids"].split(",")]
    assert registry.proc is not None
    registry.proc.send_signal(signal.SIGTERM)
    assert registry.proc.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_killed_registry_worker_ends_the_registry_for_its_supervisor(
    workers_fleet: Fleet,
) -> None:
    registry = workers_fleet.replicas[0]
    (launched,) = [r for r in _log_records(registry) if r["message"] == "workers started"]
    victim, survivor = (int(pid) for pid in launched["pids"].split(","))
    os.kill(victim, signal.SIGKILL)
    assert registry.proc is not None
    assert registry.proc.wait(timeout=30) == WORKER_DIED_EXIT_STATUS
    assert not Path(f"/proc/{survivor}").exists()
