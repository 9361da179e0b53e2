"""A bounded soak and fault test: mixed load against two `tdx-registry` replicas on one
PostgreSQL while one replica is killed with SIGKILL and restarted, and while PostgreSQL is
restarted once; then every acknowledged registration is checked to be stored exactly once.

The load, `--workers` threads each with its own HTTP clients, picks at random (weights 4:4:2):

- a v2 registration of a new instance: a challenge from one replica, a quote over
  `report_data_for_v2` from one of `--platforms` simulated machines of the sim's FMSPC
  (`SimPlatform.mint_platform`: each its own PCK certificate and PPID, its RTMR3 extended with
  its own boot event log), posted to the same replica or the other;
- a GET of an acknowledged record from either replica (its challenge must be the one sent);
- a log proof: the record's `log_index`, a signed checkpoint (verified against the log key
  pinned at start), the leaf (`/log/entries`, naming the instance), its inclusion proof in that
  checkpoint and the consistency proof from the worker's previous checkpoint, each from a
  replica picked at random, every proof verified with tdx-merkle.

Faults, at fixed fractions of the run: replica 1 gets SIGKILL at 20% and is started again
(same port, same database) `--down` seconds later; PostgreSQL is stopped (`pg_ctl stop -m
fast`, or `--pg-stop-mode`) at 55% and started again `--down` seconds later.

A fault window runs from the fault's start (just before the signal or the stop) until the
first success after the recovery, plus `--margin` seconds (default 3): for the killed replica,
the first 2xx answer of that replica to a request sent after its restart answered; for
PostgreSQL, the first 200 registration (a database write) sent after the restart, on each
replica, the later of the two. The kill window covers the requests to the killed replica; the
PostgreSQL window covers both replicas. A request is inside a window when its own interval
(sent .. answered) overlaps it; a fault that never recovers is a failure, not an endless window.

Targets: no acknowledged (200) registration lost (after the run each one's record is on both
replicas with its challenge, the log read from each replica is the same and holds exactly one
leaf for it, the record's `log_index`), no 5xx and no unanswered request outside the windows,
no 4xx at all, no proof or record that disagrees; resident memory (VmRSS from /proc, sampled
every 2 s) of each replica's last process within `--rss-bound` (default 10%) from its first
minute to the last (windows of a quarter of its life when it lived under four minutes).

Run by hand: `hatch run bench:soak --minutes 10` (not part of CI; the suite runs a short form,
tests/test_registry_soak.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_measure import BootEvent, EventLog, event_digest
from tdx_merkle import (
    Checkpoint,
    MerkleError,
    NoteVerifier,
    open_note,
    verify_consistency,
    verify_inclusion,
)
from tdx_report_data import prove_possession, report_data_for_v2
from tdx_service_kit.testing import PostgresCluster, Program, throwaway_postgres
from tdx_sim import SimOptions, SimPlatform

REQUEST_TIMEOUT = 30.0
"""Seconds a load request may take before it counts as unanswered."""
RSS_INTERVAL = 2.0
RSS_WINDOW = 60.0
"""The "first minute" and "last minute" of a replica's resident memory."""
READ_CACHE_TTL = 1.0
"""The registries' default GET /instance cache lifetime: waited out before the final check."""
ENTRIES_PAGE = 1000
"""The most leaves one GET /log/entries returns."""
OPS = ("register", "get", "proof")
WEIGHTS = (4, 4, 2)
"""How often each operation of the load is picked."""


class SoakError(RuntimeError):
    """The soak could not run (a program did not start again, the log key did not parse)."""


@dataclass(frozen=True)
class Request:
    """One HTTP request of the load: what it was, to which replica, when, and its answer
    (`status` None: no HTTP answer, `error` names why)."""

    op: str
    replica: int
    start: float
    end: float
    status: int | None
    error: str = ""


@dataclass
class Window:
    """A fault: the replicas whose requests it covers, when it began, when the fault was
    undone (`recovered`), and the first success after that (`end`, None while none)."""

    name: str
    replicas: frozenset[int]
    start: float
    recovered: float | None = None
    end: float | None = None

    def covers(self, request: Request, margin: float) -> bool:
        if request.replica not in self.replicas:
            return False
        stop = float("inf") if self.end is None else self.end + margin
        return request.start <= stop and request.end >= self.start


@dataclass(frozen=True)
class Ack:
    """An acknowledged registration: the instance and the challenge its binding covers."""

    instance: str
    challenge: str


@dataclass(frozen=True)
class Plan:
    """When the faults happen, as fractions of the run, and how long each stays down."""

    seconds: float
    kill_at: float = 0.20
    pg_at: float = 0.55
    down: float = 2.0
    pg_stop_mode: str = "fast"
    killed: int = 1


@dataclass
class Report:
    """What a soak measured; `failures()` lists the targets it missed."""

    seconds: float
    requests: list[Request]
    windows: list[Window]
    margin: float
    attempted: int
    acked: int
    lost: list[str]
    stored_unacked: int
    anomalies: list[str]
    rss: dict[int, tuple[float, float, int]]
    """Per replica: mean VmRSS in KiB over the first and the last window of its last process,
    and how many seconds that process lived under load."""
    rss_bound: float | None
    log_size: int = 0
    rss_by_minute: dict[int, list[float]] = field(default_factory=dict)
    """Per replica: mean VmRSS in KiB of each minute of the run (its last process's)."""

    def outside(self) -> list[Request]:
        """The failed requests (5xx or unanswered) that no window covers."""
        return [
            r
            for r in self.requests
            if (r.status is None or r.status >= 500)
            and not any(w.covers(r, self.margin) for w in self.windows)
        ]

    def client_errors(self) -> list[Request]:
        return [r for r in self.requests if r.status is not None and 400 <= r.status < 500]

    def rss_change(self, replica: int) -> float:
        first, last, _ = self.rss[replica]
        return (last - first) / first

    def failures(self) -> list[str]:
        failed = []
        if self.lost:
            failed.append(f"{len(self.lost)} acknowledged registrations lost")
        if outside := self.outside():
            failed.append(f"{len(outside)} 5xx or unanswered requests outside the fault windows")
        if errors := self.client_errors():
            failed.append(f"{len(errors)} 4xx answers")
        if self.anomalies:
            failed.append(f"{len(self.anomalies)} answers that disagree with what was stored")
        for window in self.windows:
            if window.end is None:
                failed.append(f"{window.name}: no success after the recovery")
        if self.acked == 0:
            failed.append("no registration was acknowledged")
        if self.rss_bound is not None:
            for replica in sorted(self.rss):
                if abs(self.rss_change(replica)) > self.rss_bound:
                    change = self.rss_change(replica)
                    failed.append(f"replica {replica} resident memory moved {change:+.1%}")
        return failed

    def lines(self) -> list[str]:
        def status_of(r: Request) -> str:
            return str(r.status) if r.status is not None else f"no answer ({r.error})"

        out = [f"soak: {self.seconds:.0f} s of load, {len(self.requests)} requests"]
        by_op: dict[str, Counter[str]] = {}
        for r in self.requests:
            by_op.setdefault(r.op, Counter())[status_of(r)] += 1
        for op in sorted(by_op):
            counts = ", ".join(f"{s}: {n}" for s, n in sorted(by_op[op].items()))
            out.append(f"  {op:12} {sum(by_op[op].values()):7}  {counts}")
        errors = Counter(status_of(r) for r in self.requests if r.status != 200)
        out.append(f"errors by status: {dict(sorted(errors.items())) or 'none'}")
        for window in self.windows:
            inside = Counter(
                status_of(r)
                for r in self.requests
                if r.status != 200 and window.covers(r, self.margin)
            )
            recovered = "never" if window.recovered is None else f"{window.recovered:.1f}"
            end = "never" if window.end is None else f"{window.end:.1f} (+{self.margin:g})"
            out.append(
                f"window {window.name}: {window.start:.1f} s, recovered {recovered}, first "
                f"success {end}; errors inside: {dict(sorted(inside.items())) or 'none'}"
            )
        outside = Counter(status_of(r) for r in self.outside())
        out.append(f"5xx/unanswered outside the windows: {dict(outside) or 'none'}")
        out.append(
            f"registrations: {self.attempted} posted, {self.acked} acknowledged, "
            f"{len(self.lost)} lost, {self.stored_unacked} stored without an acknowledgement; "
            f"log size {self.log_size}"
        )
        for replica in sorted(self.rss):
            first, last, lived = self.rss[replica]
            out.append(
                f"replica {replica} RSS (last process, {lived:.0f} s): first {first / 1024:.1f} "
                f"MiB, last {last / 1024:.1f} MiB ({self.rss_change(replica):+.1%})"
            )
            minutes = " ".join(f"{kib / 1024:.1f}" for kib in self.rss_by_minute.get(replica, []))
            out.append(f"replica {replica} RSS by minute of the run (MiB): {minutes}")
        out.extend(f"anomaly: {a}" for a in self.anomalies[:20])
        out.extend(f"lost: {instance}" for instance in self.lost[:20])
        failed = self.failures()
        out.append("targets: " + ("met" if not failed else "MISSED: " + "; ".join(failed)))
        return out


def rss_kib(pid: int) -> int | None:
    """VmRSS of process `pid` in KiB (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def fleet(sim_state: Path, platforms: int) -> list[tuple[SimPlatform, EventLog]]:
    """`platforms` simulated machines under the sim's PCK Platform CA (its PKI read from
    `sim_state`), each booted: its RTMR3 extended with the boot event of its own log."""
    base = SimPlatform(sim_state, SimOptions())
    members = []
    for _ in range(platforms):
        member = base.mint_platform()
        log = EventLog(BootEvent.fresh(int(time.time())))
        for event in log.events:
            member.rtmrs.extend(3, event_digest(event))
        members.append((member, log))
    return members


@dataclass
class Soak:
    """The load, the faults and the final check against running `replicas` on `cluster`."""

    replicas: Sequence[Program]
    cluster: PostgresCluster
    sim_state: Path
    platforms: int = 50
    workers: int = 4
    margin: float = 3.0
    seed: int | None = None
    log_key: NoteVerifier | None = None
    requests: list[Request] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    anomalies: list[str] = field(default_factory=list)
    rss: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(time, replica, pid, KiB) samples."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _t0: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self._t0

    # --- one request, recorded ---------------------------------------------------------------

    def _call(
        self,
        clients: Sequence[httpx.Client],
        replica: int,
        op: str,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> httpx.Response | None:
        start = self.now()
        try:
            answer = clients[replica].request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            with self._lock:
                self.requests.append(
                    Request(op, replica, start, self.now(), None, type(exc).__name__)
                )
            return None
        with self._lock:
            self.requests.append(Request(op, replica, start, self.now(), answer.status_code))
        return answer if answer.status_code == 200 else None

    def _anomaly(self, text: str) -> None:
        with self._lock:
            self.anomalies.append(f"{self.now():.1f} s: {text}")

    # --- the load ----------------------------------------------------------------------------

    def _register(
        self,
        clients: Sequence[httpx.Client],
        rng: random.Random,
        member: SimPlatform,
        log: EventLog,
    ) -> None:
        issuer = rng.randrange(len(clients))
        target = issuer if rng.random() < 0.5 else rng.randrange(len(clients))
        answer = self._call(clients, issuer, "challenge", "GET", "/challenge")
        if answer is None:
            return
        challenge = bytes.fromhex(answer.json()["nonce"])
        key = Ed25519PrivateKey.generate()
        instance = key.public_key().public_bytes_raw()
        report_data = report_data_for_v2(instance, member.ppid, challenge, None, None)
        body = {
            "instance_pubkey": instance.hex(),
            "ppid": member.ppid.hex(),
            "attestation_quote": base64.b64encode(member.quote(report_data)).decode(),
            "operator": None,
            "owner": None,
            "event_log": log.to_json(),
            "challenge": challenge.hex(),
            "instance_signature": prove_possession(key, challenge, report_data).hex(),
        }
        with self._lock:
            self.attempted.add(instance.hex())
        if self._call(clients, target, "register", "POST", "/register", json=body) is not None:
            with self._lock:
                self.acks.append(Ack(instance.hex(), challenge.hex()))

    def _record(
        self, clients: Sequence[httpx.Client], rng: random.Random, ack: Ack
    ) -> dict[str, Any] | None:
        replica = rng.randrange(len(clients))
        answer = self._call(clients, replica, "get", "GET", f"/instance/{ack.instance}")
        if answer is None:
            return None
        record: dict[str, Any] = answer.json()
        if record.get("challenge") != ack.challenge:
            self._anomaly(f"replica {replica} served {ack.instance} with another challenge")
            return None
        return record

    def _checkpoint(self, clients: Sequence[httpx.Client], replica: int) -> Checkpoint | None:
        answer = self._call(clients, replica, "checkpoint", "GET", "/log/checkpoint")
        if answer is None:
            return None
        assert self.log_key is not None
        try:
            return Checkpoint.parse(open_note(answer.text, [self.log_key]).text)
        except MerkleError as exc:
            self._anomaly(f"replica {replica} served a bad checkpoint: {exc}")
            return None

    def _proof(
        self,
        clients: Sequence[httpx.Client],
        rng: random.Random,
        ack: Ack,
        previous: list[Checkpoint],
    ) -> None:
        record = self._record(clients, rng, ack)
        if record is None:
            return
        index = record["log_index"]
        n = len(clients)
        checkpoint = self._checkpoint(clients, rng.randrange(n))
        if checkpoint is None:
            return
        if not isinstance(index, int) or index >= checkpoint.size:
            self._anomaly(
                f"log index {index} of {ack.instance} not in a checkpoint of size {checkpoint.size}"
            )
            return
        replica = rng.randrange(n)
        query = f"/log/entries?start={index}&end={index + 1}"
        entries = self._call(clients, replica, "entries", "GET", query)
        if entries is None:
            return
        (entry,) = entries.json()["entries"]
        if json.loads(entry["entry"])["instance_pubkey"] != ack.instance:
            self._anomaly(f"replica {replica}: leaf {index} is not {ack.instance}'s")
            return
        leaf = base64.b64decode(entry["leaf_hash"])
        replica = rng.randrange(n)
        query = f"/log/proof/inclusion?index={index}&tree_size={checkpoint.size}"
        inclusion = self._call(clients, replica, "inclusion", "GET", query)
        if inclusion is None:
            return
        hashes = [base64.b64decode(h) for h in inclusion.json()["hashes"]]
        try:
            verify_inclusion(leaf, index, checkpoint.size, hashes, checkpoint.root_hash)
        except MerkleError as exc:
            self._anomaly(f"replica {replica}: inclusion of leaf {index}: {exc}")
            return
        if previous and 0 < previous[0].size <= checkpoint.size:
            first = previous[0]
            replica = rng.randrange(n)
            query = f"/log/proof/consistency?first={first.size}&second={checkpoint.size}"
            consistency = self._call(clients, replica, "consistency", "GET", query)
            if consistency is None:
                return
            hashes = [base64.b64decode(h) for h in consistency.json()["hashes"]]
            try:
                verify_consistency(
                    first.size, checkpoint.size, first.root_hash, checkpoint.root_hash, hashes
                )
            except MerkleError as exc:
                self._anomaly(f"replica {replica}: consistency {first.size}..: {exc}")
                return
        previous[:] = [checkpoint]

    def _worker(self, number: int, members: list[tuple[SimPlatform, EventLog]]) -> None:
        rng = random.Random(None if self.seed is None else self.seed + number)
        mine = itertools.cycle(members[number :: self.workers] or members)
        previous: list[Checkpoint] = []
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(httpx.Client(base_url=r.url, timeout=REQUEST_TIMEOUT))
                for r in self.replicas
            ]
            while not self._stop.is_set():
                op = rng.choices(OPS, weights=WEIGHTS)[0]
                with self._lock:
                    ack = rng.choice(self.acks) if self.acks else None
                if op == "register" or ack is None:
                    self._register(clients, rng, *next(mine))
                elif op == "get":
                    self._record(clients, rng, ack)
                else:
                    self._proof(clients, rng, ack, previous)

    def _sample_rss(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            for replica, program in enumerate(self.replicas):
                proc = program.proc
                if proc is None or proc.poll() is not None:
                    continue
                kib = rss_kib(proc.pid)
                if kib is not None:
                    with self._lock:
                        self.rss.append((self.now(), replica, proc.pid, kib))

    # --- the faults --------------------------------------------------------------------------

    def _sleep_until(self, moment: float) -> None:
        self._stop.wait(max(0.0, moment - self.now()))

    def _faults(self, plan: Plan) -> None:
        self._sleep_until(plan.seconds * plan.kill_at)
        killed = self.replicas[plan.killed]
        assert killed.proc is not None
        window = Window(f"SIGKILL replica {plan.killed}", frozenset({plan.killed}), self.now())
        self.windows.append(window)
        killed.proc.kill()
        killed.proc.wait()
        self._sleep_until(window.start + plan.down)
        killed.start()
        window.recovered = self.now()

        self._sleep_until(plan.seconds * plan.pg_at)
        window = Window("PostgreSQL restart", frozenset(range(len(self.replicas))), self.now())
        self.windows.append(window)
        self.cluster.stop(plan.pg_stop_mode)
        self._sleep_until(window.start + plan.down)
        self.cluster.start()
        window.recovered = self.now()

    def _close_windows(self) -> None:
        """Each window's end: the first success after its recovery (see the module's doc)."""
        for window in self.windows:
            if window.recovered is None:
                continue
            after = [r for r in self.requests if r.start >= window.recovered and r.status == 200]
            firsts = []
            for replica in sorted(window.replicas):
                if window.name.startswith("SIGKILL"):
                    mine = [r.end for r in after if r.replica == replica]
                else:
                    mine = [r.end for r in after if r.replica == replica and r.op == "register"]
                if mine:
                    firsts.append(min(mine))
            if len(firsts) == len(window.replicas):
                window.end = max(firsts)

    # --- the run -----------------------------------------------------------------------------

    def run(self, plan: Plan, rss_bound: float | None) -> Report:
        key = httpx.get(self.replicas[0].url + "/log/public-key", timeout=REQUEST_TIMEOUT)
        try:
            self.log_key = NoteVerifier.from_verifier_key(key.text)
        except MerkleError as exc:
            raise SoakError(f"the log's public key did not parse: {exc}") from None
        members = fleet(self.sim_state, self.platforms)
        self._t0 = time.monotonic()
        threads = [
            threading.Thread(target=self._worker, args=(i, members), daemon=True)
            for i in range(self.workers)
        ]
        threads.append(threading.Thread(target=self._sample_rss, daemon=True))
        for thread in threads:
            thread.start()
        try:
            self._faults(plan)
            self._sleep_until(plan.seconds)
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT + 5)
        seconds = self.now()
        self._close_windows()
        lost, stored_unacked, size = self.check_stored()
        return Report(
            seconds=seconds,
            requests=list(self.requests),
            windows=self.windows,
            margin=self.margin,
            attempted=len(self.attempted),
            acked=len(self.acks),
            lost=lost,
            stored_unacked=stored_unacked,
            anomalies=self.anomalies,
            rss=self._rss_summary(),
            rss_bound=rss_bound,
            log_size=size,
            rss_by_minute=self._rss_by_minute(),
        )

    def _rss_by_minute(self) -> dict[int, list[float]]:
        by_minute: dict[int, list[float]] = {}
        for replica, program in enumerate(self.replicas):
            if program.proc is None:
                continue
            minutes: dict[int, list[int]] = {}
            for t, r, pid, kib in self.rss:
                if r == replica and pid == program.proc.pid:
                    minutes.setdefault(int(t // 60), []).append(kib)
            by_minute[replica] = [sum(v) / len(v) for _, v in sorted(minutes.items())]
        return by_minute

    def _rss_summary(self) -> dict[int, tuple[float, float, int]]:
        summary = {}
        for replica, program in enumerate(self.replicas):
            if program.proc is None:
                continue
            samples = [(t, kib) for t, r, pid, kib in self.rss if pid == program.proc.pid]
            if len(samples) < 2:
                continue
            born, died = samples[0][0], samples[-1][0]
            span = min(RSS_WINDOW, (died - born) / 4)
            first = [kib for t, kib in samples if t <= born + span]
            last = [kib for t, kib in samples if t >= died - span]
            summary[replica] = (sum(first) / len(first), sum(last) / len(last), int(died - born))
        return summary

    def _whole_log(self, replica: Program) -> list[dict[str, Any]]:
        with httpx.Client(base_url=replica.url, timeout=REQUEST_TIMEOUT) as client:
            checkpoint = client.get("/log/checkpoint")
            checkpoint.raise_for_status()
            size = int(checkpoint.text.splitlines()[1])
            entries: list[dict[str, Any]] = []
            for start in range(0, size, ENTRIES_PAGE):
                page = client.get(f"/log/entries?start={start}&end={start + ENTRIES_PAGE}")
                page.raise_for_status()
                entries.extend(page.json()["entries"])
        return entries

    def check_stored(self) -> tuple[list[str], int, int]:
        """After the run: (acknowledged instances not stored exactly once, instances stored
        without an acknowledgement, log size). Disagreements go to `anomalies`."""
        time.sleep(READ_CACHE_TTL + 0.5)
        logs = [self._whole_log(replica) for replica in self.replicas]
        if any(log != logs[0] for log in logs):
            self.anomalies.append("the replicas serve different logs")
        leaves: dict[str, list[int]] = {}
        for entry in logs[0]:
            leaves.setdefault(json.loads(entry["entry"])["instance_pubkey"], []).append(
                entry["index"]
            )
        if [e["index"] for e in logs[0]] != list(range(len(logs[0]))):
            self.anomalies.append("the log's indices are not one sequence")
        lost = []
        acked = {ack.instance for ack in self.acks}
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(httpx.Client(base_url=r.url, timeout=REQUEST_TIMEOUT))
                for r in self.replicas
            ]
            for ack in self.acks:
                ok = len(leaves.get(ack.instance, [])) == 1
                for client in clients:
                    answer = client.get(f"/instance/{ack.instance}")
                    ok = (
                        ok
                        and answer.status_code == 200
                        and answer.json()["challenge"] == ack.challenge
                        and [answer.json()["log_index"]] == leaves[ack.instance]
                    )
                if not ok:
                    lost.append(ack.instance)
        for instance, indices in leaves.items():
            if instance not in self.attempted:
                self.anomalies.append(f"the log holds {instance}, never registered")
            elif len(indices) != 1:
                self.anomalies.append(f"{instance} has {len(indices)} leaves")
        stored_unacked = sum(1 for instance in leaves if instance not in acked)
        return lost, stored_unacked, len(logs[0])


def main(argv: list[str] | None = None) -> int:
    from tests.replicas import start_replicas  # the suite's start-up of two replicas

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="of load (default 10)")
    parser.add_argument("--workers", type=int, default=4, help="load threads (default 4)")
    parser.add_argument("--platforms", type=int, default=200, help="simulated machines")
    parser.add_argument("--down", type=float, default=3.0, help="seconds each fault lasts")
    parser.add_argument("--margin", type=float, default=3.0, help="seconds after a recovery")
    parser.add_argument("--pg-stop-mode", choices=("fast", "immediate"), default="fast")
    parser.add_argument("--rss-bound", type=float, default=0.10, help="default 0.10 (10%%)")
    parser.add_argument("--seed", type=int, help="of the load's random choices")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.workers < 1 or args.platforms < 1 or args.down <= 0:
        parser.error("--minutes and --down must be positive, --workers and --platforms >= 1")
    plan = Plan(seconds=args.minutes * 60, down=args.down, pg_stop_mode=args.pg_stop_mode)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with (
        tempfile.TemporaryDirectory(prefix="tdx-soak-") as name,
        throwaway_postgres(durable=True) as cluster,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        db = cluster.create_database("registry")
        started = start_replicas(stack, tmp, db, registry_flags=("--no-rate-limit",))
        soak = Soak(
            started.replicas,
            cluster,
            started.sim_state,
            args.platforms,
            args.workers,
            args.margin,
            args.seed,
        )
        print(
            f"soak: started {started_at}, {args.minutes:g} min, {args.workers} workers, "
            f"{args.platforms} platforms",
            flush=True,
        )
        report = soak.run(plan, args.rss_bound)
    for line in report.lines():
        print(line)
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
