"""Benchmarks of the Core issue, printed side by side with their baselines in one run.

1. tdx-verify verifications per second on one quote with warm collateral, against dcap-qvl's
   `verify` on the same quote and collateral (target >= 1.0x).
2. POST /register throughput of the real registry, against raw tdx-verify (target >= 0.6x).
3. GET /instance/{pubkey} throughput of the registry, against a bare Sanic route returning a
   constant (target >= 0.5x).
4. PCCS fetches the registry made during the whole run, counted by a proxy in front of the sim
   (target: one set per FMSPC).

2 and 3 run once per storage backend (`--backend sqlite|postgres|both`, default both): SQLite
in a temp dir, PostgreSQL in a throwaway cluster with its default durability
(`tdx_service_kit.testing.throwaway_postgres`).
The registration is the identity service's (v2): an operator, and an RTMR3 event log (boot, two
helper programs, a workload configured and exposed) extended into the simulator's RTMR3; each
POST names its own challenge, so before the measurement the bench fetches `--registrations`
challenges from the registry and a quote from the simulator for each (not timed), and wrk then
posts those bodies, each once (a Lua script hands out the next one per request; an httpx client
measured 0.6x of wrk's rate, being the bottleneck itself).
`--against REV` also runs the registry of git revision REV (its `apps/registry/src` on this
checkout's libraries; REV must have GET /challenge) under the same load, and prints this
checkout's rates against it: how a change to the registry's write or read path is decided
(`bench/store.py` measures the store's write path alone the same way).

Run by hand: `hatch run bench:run` (not part of CI).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port, program, started
from tdx_measure import (
    BootEvent,
    Event,
    EventLog,
    ExecutableEvent,
    WorkloadEvent,
    event_digest,
)
from tdx_ppid import parse_sgx_extension, pck_chain_from_quote, quote_ppid
from tdx_quote import parse_quote
from tdx_report_data import (
    IdentityInfo,
    prove_possession,
    report_data_for_v2,
    sign_identity_v2,
    sign_instance_v2,
)
from tdx_service_kit.testing import throwaway_postgres
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists
from tdx_verify import Collateral, PccsClient, Verifier

HERE = Path(__file__).resolve().parent
BACKENDS = ("sqlite", "postgres")
CONNECTIONS = 16
MAX_REGISTRATIONS = 10_000
"""The registry's default cap on outstanding challenges."""


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn` over about `seconds` (after a short warm-up)."""
    for _ in range(20):
        fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


def http_rate(
    url: str, seconds: float, bodies: list[bytes] | None = None, connections: int = CONNECTIONS
) -> float:
    """Requests per second measured by wrk (a Python client would be the bottleneck here): GETs,
    or POSTs of `bodies`, each sent once, in order.

    Any non-2xx answer fails the benchmark: throughput of errors is not throughput (so is
    running out of bodies, which repeats the first ones)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("bench: wrk is not installed (./scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", url]
        if bodies is not None:
            folder = Path(tmp)
            for i, body in enumerate(bodies):
                (folder / f"{i}.json").write_bytes(body)
            script = folder / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                "local bodies = {}\n"
                f"for i = 0, {len(bodies) - 1} do\n"
                f'  local f = io.open("{folder}/" .. i .. ".json", "rb")\n'
                '  bodies[i + 1] = f:read("*a")\n'
                "  f:close()\n"
                "end\n"
                "local n = 0\n"
                "request = function()\n"
                "  n = n % #bodies + 1\n"
                "  return wrk.format(nil, nil, nil, bodies[n])\n"
                "end\n"
            )
            argv[1:1] = ["-s", str(script)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        hint = "" if bodies is None else f" (more than {len(bodies)} registrations? raise them)"
        sys.exit(f"bench: errors under load at {url}{hint}:\n{out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    sys.exit(f"bench: could not read wrk's output:\n{out}")


@dataclasses.dataclass(frozen=True)
class Registrant:
    """The instance the bench registers: its key, PPID, operator identity and event log, and
    the simulator that quotes for it."""

    key: Ed25519PrivateKey
    ppid: bytes
    operator: IdentityInfo
    event_log: EventLog
    sim_url: str

    @property
    def pubkey(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def quote(self, challenge: bytes) -> tuple[bytes, bytes]:
        """The v2 report_data over `challenge` and the simulator's quote of it."""
        report_data = report_data_for_v2(self.pubkey, self.ppid, challenge, self.operator, None)
        quote = httpx.get(f"{self.sim_url}/attest/{report_data.hex()}")
        quote.raise_for_status()
        return report_data, quote.content

    def bodies(self, registry_url: str, count: int) -> list[bytes]:
        """`count` v2 registration bodies, each over a challenge of the registry at
        `registry_url` fetched now, as the identity service builds them."""
        bodies = []
        with httpx.Client(base_url=registry_url) as registry:
            for _ in range(count):
                answer = registry.get("/challenge")
                if answer.status_code != 200:
                    sys.exit(
                        f"bench: GET /challenge answered {answer.status_code} (a registry "
                        f"without v2 registrations cannot be measured): {answer.text[:200]}"
                    )
                challenge = bytes.fromhex(answer.json()["nonce"])
                report_data, quote = self.quote(challenge)
                body = {
                    "instance_pubkey": self.pubkey.hex(),
                    "ppid": self.ppid.hex(),
                    "attestation_quote": base64.b64encode(quote).decode(),
                    "operator": self.operator.to_object(),
                    "owner": None,
                    "event_log": self.event_log.to_json(),
                    "challenge": challenge.hex(),
                    "instance_signature": prove_possession(self.key, challenge, report_data).hex(),
                }
                bodies.append(json.dumps(body).encode())
        return bodies


class CountingProxy:
    """A tiny HTTP proxy in front of the sim's PCCS routes that counts what the registry asks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self.port = free_port()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.counts[target.split("?", 1)[0]] += 1
            async with httpx.AsyncClient() as client:
                r = await client.request(method, self.upstream + target)
            headers = "".join(
                f"{k}: {v}\r\n"
                for k, v in r.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            )
            writer.write(
                f"HTTP/1.1 {r.status_code} X\r\n{headers}Content-Length: {len(r.content)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + r.content
            )
            await writer.drain()
        finally:
            writer.close()

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Serve from a thread of its own, so the measured clients never share its loop."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        task: list[asyncio.Future[None]] = []

        def run() -> None:
            task.append(asyncio.ensure_future(serve(), loop=loop))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task[0])

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield
        finally:
            loop.call_soon_threadsafe(task[0].cancel)
            thread.join(10)


async def fetch(pccs: PccsClient, fmspc: bytes) -> Collateral:
    try:
        return await pccs.fetch_collateral(fmspc, "platform")
    finally:
        await pccs.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--registrations",
        type=int,
        help="v2 registrations prepared per POST /register measurement, each over its own "
        f"challenge (1 to {MAX_REGISTRATIONS}; default 500 per second measured)",
    )
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "both"),
        default="both",
        help="registry storage for the POST and GET measurements (default both)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also measure the registry of git revision REV and print this one against it",
    )
    args = parser.parse_args()
    registrations = args.registrations
    if registrations is None:
        registrations = min(MAX_REGISTRATIONS, max(1, round(500 * args.seconds)))
    if not 1 <= registrations <= MAX_REGISTRATIONS:
        parser.error(f"--registrations must be 1 to {MAX_REGISTRATIONS}")
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    return run(args.seconds, backends, args.against, registrations)


def registry_of_revision(revision: str, into: Path) -> Path:
    """Extract `apps/registry/src` of git `revision` under `into`; the directory to import from."""
    archive = subprocess.run(
        ["git", "archive", revision, "--", "apps/registry/src"],
        cwd=HERE.parent,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        sys.exit(f"bench: git archive {revision}: {archive.stderr.decode().strip()}")
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "apps" / "registry" / "src"


def workload_events() -> list[Event]:
    """What the identity service logs after the boot event up to an exposed workload: its two
    helper programs, the workload configured, then exposed."""
    events: list[Event] = [
        ExecutableEvent(
            role=role,
            path=f"/usr/bin/{role}",
            sha384=bytes(range(48)),
            build_id=bytes(20),
            machine="EM_X86_64",
        )
        for role in ("podman", "gocryptfs")
    ]
    configured = WorkloadEvent(
        transition="configure",
        image="registry.example/app:1",
        image_id="sha256:" + "ab" * 32,
        persist_dirs=("/data",),
        port=8080,
    )
    return [*events, configured, dataclasses.replace(configured, transition="expose")]


def measured_event_log(sim_url: str) -> EventLog:
    """The identity service's log up to an exposed workload, extended into the sim's RTMR3."""
    log = EventLog(BootEvent.fresh(int(time.time())))
    for event in workload_events():
        log.append(event)
    for event in log.events:
        httpx.post(
            f"{sim_url}/rtmr/3/extend", json={"digest": event_digest(event).hex()}
        ).raise_for_status()
    rtmr3 = httpx.get(f"{sim_url}/rtmr").json()["rtmr3"]
    if rtmr3 != log.replay().hex():
        sys.exit("bench: the simulator's RTMR3 is not the event log's replay")
    return log


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[dict[str, str]]:
    """The registry's environment for a fresh database of `backend`."""
    tmp.mkdir()
    key = {"REGISTRY_LOG_KEY_PATH": str(tmp / "registry-log.key")}
    if backend == "sqlite":
        yield {"REGISTRY_DB_PATH": str(tmp / "registry.db"), **key}
    else:
        with throwaway_postgres(durable=True) as cluster:
            yield {"REGISTRY_DB_URL": cluster.create_database("registry"), **key}


def measure_registry(
    backend: str,
    tmp: Path,
    env: dict[str, str],
    registrant: Registrant,
    registrations: int,
    seconds: float,
) -> tuple[float, float]:
    """POST /register (`registrations` v2 bodies) then GET /instance requests per second of a
    fresh registry on `backend` (`tmp` its own, fresh directory)."""
    reg_port = free_port()
    reg_url = f"http://127.0.0.1:{reg_port}"
    tmp.mkdir()
    with (
        database(backend, tmp / backend) as db_env,
        started(
            [
                program("tdx-registry"),
                "--host",
                "127.0.0.1",
                "--port",
                str(reg_port),
                "--no-rate-limit",
                "--log-level",
                "WARNING",
            ],
            reg_url + "/instance/" + "00" * 32,
            tmp / "registry.log",
            env | db_env | {"REGISTRY_CHALLENGE_TTL": "600"},
        ),
    ):
        warm_up, *bodies = registrant.bodies(reg_url, registrations + 1)
        posted = httpx.post(
            reg_url + "/register", content=warm_up, headers={"Content-Type": "application/json"}
        )
        if posted.status_code != 200:  # the first one fetches the collateral, untimed
            sys.exit(f"bench: POST /register answered {posted.status_code}: {posted.text}")
        register_rate = http_rate(reg_url + "/register", seconds, bodies)
        instance = registrant.pubkey
        answer = httpx.get(f"{reg_url}/instance/{instance.hex()}").json()
        if answer["binding_version"] != 2:
            sys.exit(f"bench: the registry stored no v2 registration: {answer}")
        if answer["workload"] is None or answer["event_log"] is None:
            sys.exit(f"bench: the registry answered without the workload: {answer}")
        get_rate = http_rate(f"{reg_url}/instance/{instance.hex()}", seconds)
    return register_rate, get_rate


def run(
    seconds: float,
    backends: tuple[str, ...],
    against: str | None = None,
    registrations: int = 1500,
) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tdx-bench-"))
    env = dict(os.environ)
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    rows: list[tuple[str, float, float, float | None]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        stack.enter_context(
            started(
                [
                    program("tdx-sim"),
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--state-dir",
                    str(tmp / "sim"),
                ],
                sim_url + "/root_ca.pem",
                tmp / "sim.log",
                env,
            )
        )
        root_pem = (tmp / "sim" / "root_ca.pem").read_bytes()
        root_der = x509.load_pem_x509_certificate(root_pem).public_bytes(serialization.Encoding.DER)

        # The instance and its operator, as the identity service would sign them (v2).
        instance_key, operator = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        instance = instance_key.public_key().public_bytes_raw()
        probe = httpx.get(f"{sim_url}/attest/{'00' * 64}").content
        ppid = quote_ppid(parse_quote(probe, allow_zero_padding=True)).value
        op = sign_identity_v2(
            instance_key,
            "operator",
            operator.public_key().public_bytes_raw(),
            sign_instance_v2(operator, "operator", instance),
        )
        registrant = Registrant(instance_key, ppid, op, measured_event_log(sim_url), sim_url)
        _, quote = registrant.quote(os.urandom(32))  # any quote of this platform

        # 1. Verification with warm collateral.
        pccs = PccsClient(sim_url)
        fmspc = parse_sgx_extension(pck_chain_from_quote(parse_quote(quote))[0]).fmspc
        collateral = asyncio.run(fetch(pccs, fmspc))
        now = datetime.now(UTC)
        verifier = Verifier(root_ca_pem=root_pem)
        ours = verifier.verify(quote, collateral, now=now)
        ref_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
        ref = dcap_qvl.verify_with_root_ca(quote, ref_collateral, root_der, int(now.timestamp()))
        assert ours.tcb_status == ref.status, (ours.tcb_status, ref.status)
        ts = int(now.timestamp())
        ours_rate = rate(lambda: verifier.verify(quote, collateral, now=now), seconds)
        ref_rate = rate(
            lambda: dcap_qvl.verify_with_root_ca(quote, ref_collateral, root_der, ts), seconds
        )
        rows.append(("verify (warm collateral) vs dcap-qvl", ours_rate, ref_rate, 1.0))

        # 2-4. The registry behind a PCCS proxy that counts fetches, once per backend.
        proxy = CountingProxy(sim_url)
        stack.enter_context(proxy.serving())
        registry_env = env | {
            "PCCS_URL": f"http://127.0.0.1:{proxy.port}",
            "TDX_TRUSTED_ROOT_CA": str(tmp / "sim" / "root_ca.pem"),
            **td_image_allowlists(DEFAULT_MR_TD),
        }
        rates: dict[str, tuple[float, float]] = {}
        against_rates: dict[str, tuple[float, float]] = {}
        against_env = None
        if against is not None:
            src = registry_of_revision(against, tmp / "against")
            path = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
            against_env = registry_env | {"PYTHONPATH": path}
        for backend in backends:
            rates[backend] = measure_registry(
                backend, tmp / f"this-{backend}", registry_env, registrant, registrations, seconds
            )
            if against_env is not None:
                against_rates[backend] = measure_registry(
                    backend,
                    tmp / f"against-{backend}",
                    against_env,
                    registrant,
                    registrations,
                    seconds,
                )
        bare_port = free_port()
        with started(
            [sys.executable, str(HERE / "bare_sanic.py"), "--port", str(bare_port)],
            f"http://127.0.0.1:{bare_port}/instance/x",
            tmp / "bare.log",
            env,
        ):
            bare_url = f"http://127.0.0.1:{bare_port}/instance/{instance.hex()}"
            bare_rate = http_rate(bare_url, seconds)
        for backend, (register_rate, _) in rates.items():
            rows.append(
                (f"POST /register ({backend}) vs raw tdx-verify", register_rate, ours_rate, 0.6)
            )
        for backend, (_, get_rate) in rates.items():
            rows.append(
                (f"GET /instance ({backend}) vs bare Sanic constant", get_rate, bare_rate, 0.5)
            )
        for backend, (register_rate, get_rate) in against_rates.items():
            this_register, this_get = rates[backend]
            rows.append(
                (f"POST /register ({backend}) vs {against}", this_register, register_rate, None)
            )
            rows.append((f"GET /instance ({backend}) vs {against}", this_get, get_rate, None))

    print(f"{'measurement':48} {'ours/s':>10} {'baseline/s':>11} {'ratio':>7} {'target':>7}")
    ok = True
    for name, a, b, target in rows:
        ratio = a / b
        if target is None:
            print(f"{name:48} {a:10.0f} {b:11.0f} {ratio:6.2f}x {'-':>7}")
            continue
        ok &= ratio >= target
        mark = "" if ratio >= target else "  (below target)"
        print(f"{name:48} {a:10.0f} {b:11.0f} {ratio:6.2f}x {target:6.1f}x{mark}")
    fetches = {k: v for k, v in proxy.counts.items() if "/certification/" in k}
    print(f"PCCS fetches by the registry during the run (one FMSPC): {json.dumps(fetches)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
