"""POST /register of a fleet of distinct machines against raw tdx-verify, side by side in one run.

The fleet: `--platforms` simulated hosts of one FMSPC (`bench.soak.fleet`: each its own PCK
certificate, PPID and attestation key under the sim's PCK Platform CA), each booted with the
identity service's event log (boot, two helper programs, a workload configured and exposed:
`bench.run.workload_events`, extended into the member's RTMR3), one operator for all. Every
registration is a new instance (its own Ed25519 key) of a machine the registry has not seen:
collateral warm, every PCK chain new.

Measured, in one run:

- raw tdx-verify, new chain with warm collateral (as `bench/verify_fleet.py` measures it: one
  `Verifier`, its collateral verified on the base platform's quote outside the timing, then
  each quote of the fleet once), on the very quotes the registry is sent, in verifications per
  CPU-second of this process; measured before the registries run (on quotes of the same
  machines) and after them (on the first run's quotes), and the mean of the two used;
- `POST /register` per wall second of a real `tdx-registry` (started on loopback with
  `--no-rate-limit --log-level WARNING`, on SQLite, and on PostgreSQL with `--postgres DSN` or
  `--throwaway-postgres`), for each of `--workers` (e.g. `1,2`; `--workers N` is passed to
  the registry only when N > 1); the bodies are built and signed before the timing (a
  challenge fetched from the registry, a quote of the member over the v2 report_data, the
  instance's proof of possession), then `--clients` threads post them, each body once, on
  keep-alive connections; also the registry's CPU seconds per registration (utime + stime of
  its process and its children, from /proc/<pid>/stat), the cores it used (those CPU seconds
  over the wall seconds: fewer than its workers, it waited or was starved), and this client's;
- the ratio of POST /register per second to raw verifications per second (target >= 0.5x
  with one worker), and of two workers to one (target >= 1.6x), with the bound the CPU per
  registration sets on the latter when the two cores are free of other load.

`--against REV` also runs the registry of git revision REV (its `apps/registry/src` on this
checkout's libraries, as `bench/run.py --against` does) in each round, and prints this one's
rates against it; `--rounds N` repeats every run N times, interleaved, and shows the means.

`--profile` instead drives the registry's registration path in this process (the JSON body
parsed as the route does, `parse_registration`, `Registrar.register` on a real SQLite store and
a real DCAP verifier whose PCCS is the sim) under cProfile, and prints its top and the time
per registration of each part of it; `--profile` with `--no-cprofile` times the path alone.

Ports: the sim, the registries and a throwaway PostgreSQL listen on `--port-base` and the
ports after it (default 18600).

Run by hand: `hatch run bench:register-fleet` (not part of CI).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import http.client
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import program, started
from bench.run import registry_of_revision, workload_events
from bench.soak import fleet
from tdx_measure import EventLog, event_digest
from tdx_quote import parse_quote
from tdx_report_data import (
    IdentityInfo,
    prove_possession,
    report_data_for_v2,
    sign_identity_v2,
    sign_instance_v2,
)
from tdx_service_kit.testing import throwaway_postgres
from tdx_sim import DEFAULT_MR_TD, SimOptions, SimPlatform, td_image_allowlists
from tdx_verify import Collateral, PccsClient, Verifier

TARGET_ONE_WORKER = 0.5
TARGET_TWO_WORKERS = 1.6
CHALLENGE_TTL = 600
REQUEST_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not run (a registration refused, a program that did not answer)."""


@dataclass(frozen=True)
class Member:
    """One machine of the fleet: the simulated host and its (booted, measured) event log."""

    platform: SimPlatform
    log: EventLog


def booted_fleet(sim_state: Path, platforms: int) -> list[Member]:
    """`bench.soak.fleet`'s machines, each log carried on to an exposed workload."""
    members = []
    for platform, log in fleet(sim_state, platforms):
        for event in workload_events():
            log.append(event)
            platform.rtmrs.extend(3, event_digest(event))
        members.append(Member(platform, log))
    return members


@dataclass(frozen=True)
class Body:
    """A prepared POST /register body and the quote inside it."""

    data: bytes
    quote: bytes


def registration_body(member: Member, operator: Ed25519PrivateKey, challenge: bytes) -> Body:
    """A new instance of `member`, registered with `operator` over `challenge`, as the identity
    service builds it (v2)."""
    key = Ed25519PrivateKey.generate()
    instance = key.public_key().public_bytes_raw()
    identity: IdentityInfo = sign_identity_v2(
        key,
        "operator",
        operator.public_key().public_bytes_raw(),
        sign_instance_v2(operator, "operator", instance),
    )
    ppid = member.platform.ppid
    report_data = report_data_for_v2(instance, ppid, challenge, identity, None)
    quote = member.platform.quote(report_data)
    body = {
        "instance_pubkey": instance.hex(),
        "ppid": ppid.hex(),
        "attestation_quote": base64.b64encode(quote).decode(),
        "operator": identity.to_object(),
        "owner": None,
        "event_log": member.log.to_json(),
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(key, challenge, report_data).hex(),
    }
    return Body(json.dumps(body).encode(), quote)


# --- raw verification ------------------------------------------------------------------------


def raw_rate(
    root_pem: bytes, collateral: Collateral, warm: bytes, quotes: Sequence[bytes]
) -> float:
    """Verifications per CPU-second of one Verifier (collateral warmed on `warm`, untimed) over
    `quotes`, each a machine it has not seen."""
    verifier = Verifier(root_ca_pem=root_pem)
    now = datetime.now(UTC)
    verifier.verify(warm, collateral, now=now)
    start = time.process_time()
    for quote in quotes:
        verifier.verify(quote, collateral, now=now)
    return len(quotes) / (time.process_time() - start)


async def fetch_collateral(pccs_url: str, quote: bytes) -> Collateral:
    from tdx_ppid import parse_sgx_extension, pck_chain_from_quote

    fmspc = parse_sgx_extension(pck_chain_from_quote(parse_quote(quote))[0]).fmspc
    client = PccsClient(pccs_url)
    try:
        return await client.fetch_collateral(fmspc, "platform")
    finally:
        await client.aclose()


# --- the registry as a program ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of its live descendants (Sanic's worker processes)."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        own[child] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += own.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def post_all(url: str, bodies: Sequence[Body], clients: int) -> float:
    """Post every body once from `clients` threads on keep-alive connections; the wall seconds
    from the first request to the last answer. Any answer but 200 fails the benchmark."""
    host, port = url.removeprefix("http://").split(":")
    failures: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def run(share: Sequence[Body]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
        barrier.wait()
        try:
            for body in share:
                conn.request("POST", "/register", body.data, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                text = answer.read()
                if answer.status != 200:
                    failures.append(f"{answer.status}: {text[:300]!r}")
                    return
        finally:
            conn.close()

    threads = [
        threading.Thread(target=run, args=(bodies[i::clients],), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise BenchError(f"POST /register answered {failures[0]}")
    return elapsed


@dataclass(frozen=True)
class RegistryRun:
    backend: str
    workers: int
    registrations: int
    seconds: float
    registry_cpu: float
    client_cpu: float
    quotes: list[bytes]

    @property
    def rate(self) -> float:
        return self.registrations / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.registry_cpu / self.registrations * 1000


@dataclass(frozen=True)
class Setup:
    tmp: Path
    sim_url: str
    sim_state: Path
    members: list[Member]
    operator: Ed25519PrivateKey
    port_base: int


def registry_env(setup: Setup, db_env: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGISTRY_", "PCCS_", "TDX_", "KBS_", "SKIP_TDX_AUTH"))
    } | {
        "PCCS_URL": setup.sim_url,
        "TDX_TRUSTED_ROOT_CA": str(setup.sim_state / "root_ca.pem"),
        "REGISTRY_CHALLENGE_TTL": str(CHALLENGE_TTL),
        **td_image_allowlists(DEFAULT_MR_TD),
        **db_env,
    }


def measure_registry(
    setup: Setup, backend: str, db_env: dict[str, str], workers: int, port: int, clients: int
) -> RegistryRun:
    """One fresh registry on `backend`: bodies prepared for every member, then all posted."""
    url = f"http://127.0.0.1:{port}"
    name = f"{backend}-{workers}"
    argv = [
        program("tdx-registry"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-rate-limit",
        "--log-level",
        "WARNING",
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = registry_env(setup, db_env)
    with started(argv, url + "/instance/" + "00" * 32, setup.tmp / f"{name}.log", env) as proc:
        assert proc.proc is not None
        warm, *members = setup.members
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:

            def challenge() -> bytes:
                answer = client.get("/challenge")
                if answer.status_code != 200:
                    raise BenchError(f"GET /challenge answered {answer.status_code}")
                return bytes.fromhex(answer.json()["nonce"])

            first = registration_body(warm, setup.operator, challenge())
            answer = client.post("/register", content=first.data)  # fetches the collateral
            if answer.status_code != 200:
                raise BenchError(f"POST /register answered {answer.status_code}: {answer.text}")
            bodies = [registration_body(m, setup.operator, challenge()) for m in members]
        pid = proc.proc.pid
        cpu0, client0 = cpu_seconds(pid), time.process_time()
        seconds = post_all(url, bodies, clients)
        registry_cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - client0
    return RegistryRun(
        backend,
        workers,
        len(bodies),
        seconds,
        registry_cpu,
        client_cpu,
        [b.quote for b in bodies],
    )


@contextlib.contextmanager
def database(
    backend: str, tmp: Path, dsn: str | None, throwaway_port: int | None
) -> Iterator[dict[str, str]]:
    """The registry's environment for a fresh database of `backend` in `tmp`."""
    tmp.mkdir()
    key = {"REGISTRY_LOG_KEY_PATH": str(tmp / "registry-log.key")}
    if backend == "sqlite":
        yield {"REGISTRY_DB_PATH": str(tmp / "registry.db"), **key}
    elif dsn is not None:
        yield {"REGISTRY_DB_URL": dsn, **key}
    else:
        with throwaway_postgres(durable=True, port=throwaway_port) as cluster:
            yield {"REGISTRY_DB_URL": cluster.create_database("registry"), **key}


def run_bench(setup: Setup, args: argparse.Namespace) -> int:
    root_pem = (setup.sim_state / "root_ca.pem").read_bytes()
    warm_quote = setup.members[0].platform.quote(os.urandom(64))
    collateral = asyncio.run(fetch_collateral(setup.sim_url, warm_quote))
    backends = ["sqlite"]
    if args.postgres is not None or args.throwaway_postgres:
        backends.append("postgres")
    if args.postgres is not None and (len(args.workers) > 1 or args.against or args.rounds > 1):
        sys.exit("bench: --postgres DSN holds one run's data: use --throwaway-postgres")
    registries: dict[str, dict[str, str]] = {"this": {}}
    if args.against is not None:
        src = registry_of_revision(args.against, setup.tmp / "against")
        path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)
        registries[args.against] = {"PYTHONPATH": path}
    fresh = [m.platform.quote(os.urandom(64)) for m in setup.members[1:]]
    raws = [raw_rate(root_pem, collateral, warm_quote, fresh)]
    runs: dict[tuple[str, str, int], list[RegistryRun]] = {}
    port = setup.port_base + 1
    for round_ in range(args.rounds):
        for backend in backends:
            for workers in args.workers:
                for label, extra in registries.items():
                    where = setup.tmp / f"db-{backend}-{workers}-{label}-{round_}"
                    with database(backend, where, args.postgres, setup.port_base + 99) as db_env:
                        run = measure_registry(
                            setup, backend, db_env | extra, workers, port, args.clients
                        )
                    port = setup.port_base + 1 + (port - setup.port_base) % 90
                    runs.setdefault((label, backend, workers), []).append(run)
                    print(
                        f"  round {round_ + 1}: {label}, {backend}, {workers} worker(s): "
                        f"{run.rate:.0f} registrations/s, {run.cpu_ms:.2f} ms registry CPU each",
                        flush=True,
                    )
    raws.append(raw_rate(root_pem, collateral, warm_quote, next(iter(runs.values()))[0].quotes))
    raw = sum(raws) / len(raws)
    count = next(iter(runs.values()))[0].registrations
    print(
        f"fleet: {count} distinct machines of one FMSPC per run (new PCK chain each, collateral "
        f"warm), one operator, a 5-event log; {args.clients} client threads; "
        f"{args.rounds} round(s), mean shown"
    )
    print(
        f"raw tdx-verify, new chain, warm collateral: {raw:.0f} verifications per CPU-second "
        f"(before the registries, after: {', '.join(f'{r:.0f}' for r in raws)})"
    )
    print(
        f"{'POST /register':36} {'reg/s':>7} {'ratio':>7} {'target':>7} "
        f"{'registry ms CPU/reg':>20} {'reg/CPU-s':>10} {'cores used':>11} {'client ms/reg':>14}"
    )
    ok = True
    rates: dict[tuple[str, str, int], float] = {}
    cpu_ms_of: dict[tuple[str, str, int], float] = {}
    for (label, backend, workers), done in runs.items():
        rate = sum(r.rate for r in done) / len(done)
        cpu_ms = sum(r.cpu_ms for r in done) / len(done)
        client_ms = sum(r.client_cpu / r.registrations for r in done) / len(done) * 1000
        cores = sum(r.registry_cpu / r.seconds for r in done) / len(done)
        rates[label, backend, workers] = rate
        cpu_ms_of[label, backend, workers] = cpu_ms
        ratio = rate / raw
        target = TARGET_ONE_WORKER if workers == 1 and label == "this" else None
        mark = ""
        if target is not None and ratio < target:
            ok, mark = False, "  (below target)"
        shown = f"{target:6.1f}x" if target is not None else f"{'-':>7}"
        name = f"{label}, {backend}, {workers} worker(s)"
        print(
            f"{name:36} {rate:7.0f} {ratio:6.2f}x {shown} {cpu_ms:20.2f} "
            f"{1000 / cpu_ms:10.0f} {cores:11.2f} {client_ms:14.2f}{mark}"
        )
    for label in registries:
        for backend in backends:
            one, two = rates.get((label, backend, 1)), rates.get((label, backend, 2))
            if one is None or two is None:
                continue
            scale = two / one
            cpu_one = cpu_ms_of[label, backend, 1]
            cpu_two = cpu_ms_of[label, backend, 2]
            print(
                f"{label}, {backend}: registry CPU per registration {cpu_one:.2f} ms with one "
                f"worker, {cpu_two:.2f} ms with two: two reach at most "
                f"{2 * cpu_one / cpu_two:.2f}x one on two cores free of other load (the "
                "client's and PostgreSQL's CPU not counted)"
            )
            met = scale >= TARGET_TWO_WORKERS
            ok &= met or label != "this"
            print(
                f"{label}, {backend}: 2 workers / 1 worker: {scale:.2f}x (target "
                f"{TARGET_TWO_WORKERS}x)" + ("" if met else "  (below target)")
            )
    if args.against is not None:
        for backend in backends:
            for workers in args.workers:
                mine, theirs = (
                    rates[("this", backend, workers)],
                    rates[(args.against, backend, workers)],
                )
                print(
                    f"this / {args.against}, {backend}, {workers} worker(s): {mine / theirs:.2f}x"
                )
    return 0 if ok else 1


# --- the registration path in this process, profiled ----------------------------------------


class Timers:
    """CPU seconds (of the process: every thread) spent in wrapped functions, by label; each
    wrapper is undone by `restore`."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._undo: list[tuple[object, str, object]] = []

    def add(self, label: str, seconds: float) -> None:
        self.spent[label] = self.spent.get(label, 0.0) + seconds

    def wrap(self, owner: object, name: str, label: str, *, run_async: bool = False) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        self.spent.setdefault(label, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.process_time() - start)

        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return await original(*args, **kwargs)
            finally:
                self.add(label, time.process_time() - start)

        setattr(owner, name, timed_async if run_async else timed)

    def restore(self) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)


async def in_process(
    setup: Setup,
    count: int,
    profiler: cProfile.Profile | None = None,
    timers: Timers | None = None,
    db_profiler: cProfile.Profile | None = None,
) -> float:
    """Register `count` members through the registry's own objects; CPU ms per registration
    (under `profiler`, or with `timers` around its parts, when given)."""
    from tdx_registry import registration
    from tdx_registry.app import build_verifier
    from tdx_registry.challenges import Challenges
    from tdx_registry.log_key import load_or_create_log_key
    from tdx_registry.registration import Registrar, parse_registration
    from tdx_registry.routes.instance import record_json
    from tdx_registry.settings import parse_settings
    from tdx_registry.store import PonyRecordStore
    from tdx_service_kit import parse_json_object
    from tdx_verify import _pccs, _verifier

    tmp = setup.tmp / f"in-process-{time.monotonic_ns()}"
    tmp.mkdir()
    env = registry_env(
        setup,
        {
            "REGISTRY_DB_PATH": str(tmp / "registry.db"),
            "REGISTRY_LOG_KEY_PATH": str(tmp / "registry-log.key"),
        },
    )
    settings = parse_settings(["--no-rate-limit"], env)
    signer = load_or_create_log_key(settings.effective_log_key_path, settings.log_origin)
    store = await PonyRecordStore.open(
        settings.database, wire=record_json, log_verifier_key=signer.verifier_key()
    )
    verifier = build_verifier(settings)
    challenges = Challenges(store, settings.challenges, lambda: datetime.now(UTC))
    registrar = Registrar(
        verifier,
        store,
        challenges,
        measurement_policy=settings.measurement_policy,
        allow_missing_event_log=settings.allow_missing_event_log,
        accept_v1=settings.accept_v1_registrations,
    )

    def add(label: str, since: float) -> None:
        if timers is not None and timers.spent:
            timers.add(label, time.process_time() - since)

    async def register(body: Body) -> None:
        start = time.process_time()
        data = parse_json_object(body.data)
        add("JSON body (parse_json_object)", start)
        start = time.process_time()
        request = parse_registration(data)
        add("parse_registration", start)
        await registrar.register(request)

    try:
        warm, *members = setup.members[: count + 1]
        await register(registration_body(warm, setup.operator, (await challenges.issue()).nonce))
        bodies = [
            registration_body(m, setup.operator, (await challenges.issue()).nonce) for m in members
        ]
        if timers is not None:
            timers.add("JSON body (parse_json_object)", 0.0)
            timers.add("parse_registration", 0.0)
            timers.wrap(registration, "_parse_event_log", "  EventLog.from_json")
            timers.wrap(challenges, "check", "challenge checked open (DB read)", run_async=True)
            timers.wrap(registration, "verify_identity_v2", "identity signatures (v2)")
            timers.wrap(registration, "report_data_for_v2", "report_data_for_v2")
            timers.wrap(registration, "verify_possession", "proof of possession")
            timers.wrap(verifier, "check", "quote verification", run_async=True)
            timers.wrap(_pccs, "parse", "  parse (tdx-quote)")
            timers.wrap(Verifier, "_verify_pck_chain", "  PCK chain verified")
            timers.wrap(_verifier, "parse_sgx_extension", "    parse_sgx_extension")
            timers.wrap(registration, "verify_log", "event log replayed (verify_log)")
            timers.wrap(registration, "check_log", "measurement policy (check_log)")
            timers.wrap(registration, "check_logged_identities", "logged identities")
            timers.wrap(store, "register", "record stored (DB)", run_async=True)
        if db_profiler is not None:
            profiled_db(store, db_profiler)
        start = time.process_time()
        if profiler is not None:
            profiler.enable()
        for body in bodies:
            await register(body)
        if profiler is not None:
            profiler.disable()
        return (time.process_time() - start) / len(bodies) * 1000
    finally:
        if timers is not None:
            timers.restore()
        await verifier.aclose()
        await store.close()


def profiled_db(store: Any, profiler: cProfile.Profile) -> None:
    """Run each of `store`'s database calls (on its DB thread) under `profiler`."""
    run = store._run

    async def profiled(fn: Any, *args: Any) -> Any:
        def inner(*inner_args: Any) -> Any:
            profiler.enable()
            try:
                return fn(*inner_args)
            finally:
                profiler.disable()

        return await run(inner, *args)

    store._run = profiled


PARTS: tuple[tuple[str, str, str], ...] = (
    ("JSON body (parse_json_object)", "body.py", "parse_json_object"),
    ("parse_registration", "registration.py", "parse_registration"),
    ("  EventLog.from_json", "_rtmr.py", "from_json"),
    ("challenge checked open (DB read)", "challenges.py", "check"),
    ("challenge consumed alone (refusals only)", "challenges.py", "consume"),
    ("identity signatures (v2)", "registration.py", "_verify_identity_v2"),
    ("report_data_for_v2", "_v2.py", "report_data_for_v2"),
    ("proof of possession", "_v2.py", "verify_possession"),
    ("quote verification (check)", "verification.py", "check"),
    ("  parse (tdx-quote)", "_verifier.py", "parse"),
    ("  PCK chain verified", "_verifier.py", "_verify_pck_chain"),
    ("    parse_sgx_extension", "_extension.py", "parse_sgx_extension"),
    ("  Verifier.verify (rest cached)", "_verifier.py", "verify"),
    ("verify_log (replay)", "_rtmr.py", "verify_log"),
    ("check_log (policy)", "_policy.py", "check_log"),
    ("record stored (DB)", "store.py", "register"),
    ("  EventLog.to_json", "_rtmr.py", "to_json"),
)


def profile_parts(stats: pstats.Stats, count: int) -> list[tuple[str, float]]:
    """(part, cumulative ms per registration) of each of `PARTS` found in `stats`."""
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, file, func in PARTS:
        total = sum(
            value[3] for key, value in table.items() if key[2] == func and key[0].endswith(file)
        )
        rows.append((label, total / count * 1000))
    return rows


def run_profile(setup: Setup, args: argparse.Namespace) -> int:
    count = len(setup.members) - 1
    plain = [asyncio.run(in_process(setup, count, None)) for _ in range(2)]
    print(
        f"in process, {count} registrations of distinct machines (SQLite): "
        f"{', '.join(f'{ms:.2f}' for ms in plain)} ms CPU per registration "
        f"({1000 / min(plain):.0f}/s)"
    )
    timers = Timers()
    ms = asyncio.run(in_process(setup, count, timers=timers))
    print(f"with timers around each part: {ms:.2f} ms CPU per registration; by part:")
    for label, spent in timers.spent.items():
        print(f"  {label:40} {spent / count * 1000:8.3f} ms")
    top = [s for label, s in timers.spent.items() if not label.startswith(" ")]
    print(f"  {'rest (event loop, DB thread hops, ...)':40} {ms - sum(top) / count * 1000:8.3f} ms")
    if args.no_cprofile:
        return 0
    profiler = cProfile.Profile()
    ms = asyncio.run(in_process(setup, count, profiler))
    print(f"under cProfile: {ms:.2f} ms CPU per registration (cProfile's overhead included)")
    stats = pstats.Stats(profiler)
    print("(cProfile sees this thread only: the DB thread's work is in the DB profile below)")
    print(f"{'part (cumulative, under cProfile)':40} {'ms/reg':>8}")
    for label, part_ms in profile_parts(stats, count):
        print(f"{label:40} {part_ms:8.3f}")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(args.top)
    db_profiler = cProfile.Profile(time.thread_time)  # CPU of the DB thread, not its waits
    ms = asyncio.run(in_process(setup, count, db_profiler=db_profiler))
    print(f"\n--- the DB thread alone, its CPU time under cProfile ({ms:.2f} ms CPU each)")
    stats = pstats.Stats(db_profiler)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(args.top)
    return 0


def parse_workers(text: str) -> list[int]:
    try:
        workers = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts") from None
    if not workers or any(not 1 <= n <= 8 for n in workers):
        raise argparse.ArgumentTypeError("worker counts are 1 to 8")
    return workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--platforms", type=int, default=2000, help="machines (default 2000)")
    parser.add_argument("--workers", type=parse_workers, default=[1], help="e.g. 1,2 (default 1)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--postgres", metavar="DSN", help="also on this (empty) database")
    parser.add_argument(
        "--throwaway-postgres", action="store_true", help="also on a throwaway PG cluster"
    )
    parser.add_argument(
        "--against", metavar="REV", help="also the registry of git revision REV, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=1, help="of every run, interleaved")
    parser.add_argument("--port-base", type=int, default=18600, help="first port (default 18600)")
    parser.add_argument("--profile", action="store_true", help="profile in process instead")
    parser.add_argument("--no-cprofile", action="store_true", help="with --profile: time only")
    parser.add_argument("--top", type=int, default=30, help="profile entries shown")
    args = parser.parse_args(argv)
    if not 2 <= args.platforms <= 9000:
        parser.error("--platforms must be 2 to 9000")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1 to 20")
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be 1 to 64")
    with tempfile.TemporaryDirectory(prefix="tdx-reg-fleet-") as name:
        tmp = Path(name)
        sim_port = args.port_base
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim_state = tmp / "sim"
        SimPlatform(sim_state, SimOptions())  # the PKI the sim and the fleet share
        sim_argv = [
            program("tdx-sim"),
            "--listen",
            f"127.0.0.1:{sim_port}",
            "--state-dir",
            str(sim_state),
        ]
        with started(sim_argv, sim_url + "/root_ca.pem", tmp / "sim.log", dict(os.environ)):
            start = time.perf_counter()
            members = booted_fleet(sim_state, args.platforms)
            print(
                f"fleet of {len(members)} machines built in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            setup = Setup(
                tmp, sim_url, sim_state, members, Ed25519PrivateKey.generate(), args.port_base
            )
            try:
                if args.profile:
                    return run_profile(setup, args)
                return run_bench(setup, args)
            except BenchError as exc:
                sys.exit(f"bench: {exc}")


if __name__ == "__main__":
    raise SystemExit(main())
