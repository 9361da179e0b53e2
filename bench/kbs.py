"""The key broker's releases per second against tdx-verify's own verifications per second, on the
same simulated quotes, printed side by side in one run (target: at least 0.3x, a release being
one verification plus the protocol's round trips).

A release is Trustee's KBS protocol as the identity service runs it: `POST /kbs/v0/auth` (a fresh
nonce and session), `POST /kbs/v0/attest` (a quote whose report_data binds that session's nonce,
its own ephemeral P-256 key and the additional evidence: instance key, RTMR3 event log, proof of
possession), `GET /kbs/v0/resource/tdx-identity/store-key/<instance>` (a JWE to that key). The
real `tdx-kbs` serves on loopback (SQLite in a temp dir, its default policy set by the admin);
`--concurrency` clients, each on its own keep-alive connection (bench/_lean_http.py: h11,
without httpx's layers, whose own cost on 2 cores hid the broker's: 0.02x with httpx).

The quote of a session depends on its nonce, so the run has three phases: (1) `--sessions`
auths, timed; (2) for each session an ephemeral key, the additional evidence and the sim's
quote over the binding, not timed (the TD's work, not the broker's); (3) attest + resource for
each session, timed. Releases per second = sessions / (time of 1 + time of 3); both phases are
printed too, and the broker process's CPU time per release over those phases (from /proc:
what a release costs the broker, whatever the client's own overhead). Every released JWE is
decrypted afterwards (not timed) and must give the uploaded resource.

The baseline: `tdx_verify.CollateralCache.verify_quote` (full DCAP, collateral fetched once from
the sim's PCCS and warm, as the broker verifies) on those same distinct quotes, one after the
other in one process, for at least `--seconds`. For scale, also printed (no target): releases
per second of one broker core (from its CPU time) against the same baseline, and the same
client doing a release's three round trips against a bare Sanic route that answers a constant
(bench/bare_sanic.py), the most any release could reach with this client on this machine.

What a release cannot skip, each step timed alone in the bench's process on the run's own
sessions: the evidence checks (`EvidenceVerifier.verify`: nonce, possession, binding, full DCAP,
the event log's replay), the shipped Rego policy on a release's real input, the JWE to a TEE
key, and the client's and the bare server's CPU for three round trips. Their sum over the
machine's cores is the ceiling printed last: the rate of a broker that did nothing else and kept
every core busy (no sessions, tokens, store, logging or routing).

Run by hand: `hatch run bench:kbs` (not part of CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port, program, started
from bench._lean_http import Answer, Connection
from tdx_kbs import ResourcePolicy, parse_settings
from tdx_kbs.broker import policy_input
from tdx_kbs.verification import DcapVerifier, EvidenceVerifier
from tdx_kbs_protocol import (
    PROTOCOL_VERSION,
    TEE_TDX,
    Attestation,
    Challenge,
    IdentityEvidence,
    KbsClient,
    Request,
    ResourcePath,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    TeeKeyPair,
    TeePublicKey,
    encrypt_resource,
    make_admin_token,
    runtime_data_binding,
    seal_store_key,
    store_key_path,
)
from tdx_measure import (
    BootEvent,
    EventLog,
    ExecutableEvent,
    IdentityEvent,
    WorkloadEvent,
    event_digest,
)
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists
from tdx_verify import CollateralCache, PccsClient, Policy, Verifier

HERE = Path(__file__).resolve().parent
TARGET = 0.3
SESSION_COOKIE = "kbs-session-id"
MAX_SESSIONS = 10_000
"""The broker's cap on sessions in memory (beyond it, auth answers 503)."""

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Instance:
    """The TD the bench plays: its instance key and the event log in the sim's RTMR3."""

    sim_url: str
    key: Ed25519PrivateKey
    log_json: str

    @property
    def pubkey(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        return IdentityEvidence.create(self.key, nonce, tee_pubkey, self.log_json).encode()

    async def quote(self, report_data: bytes) -> TdxEvidence:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.sim_url}/attest/{report_data.hex()}")
        answer.raise_for_status()
        return TdxEvidence(quote=answer.content, cc_eventlog=None)


@dataclasses.dataclass
class Session:
    cookie: str
    nonce: str
    keys: TeeKeyPair | None = None
    quote: bytes = b""
    body: dict[str, object] = dataclasses.field(default_factory=dict)
    jwe: object = None


def measured_instance(sim_url: str, owner: bytes) -> Instance:
    """The identity service's log of an instance whose owner is `owner`, with a configured
    workload, extended into the sim's RTMR3."""
    log = EventLog(BootEvent.fresh(int(time.time())))
    for role in ("podman", "gocryptfs"):
        log.append(
            ExecutableEvent(
                role=role,
                path=f"/usr/bin/{role}",
                sha384=bytes(range(48)),
                build_id=bytes(20),
                machine="EM_X86_64",
            )
        )
    log.append(
        IdentityEvent("operator", Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    )
    log.append(IdentityEvent("owner", owner))
    log.append(
        WorkloadEvent(
            transition="configure",
            image="registry.example/app:1",
            image_id="sha256:" + "ab" * 32,
            persist_dirs=("/data",),
            port=8080,
        )
    )
    for event in log.events:
        httpx.post(
            f"{sim_url}/rtmr/3/extend", json={"digest": event_digest(event).hex()}
        ).raise_for_status()
    if httpx.get(f"{sim_url}/rtmr").json()["rtmr3"] != log.replay().hex():
        sys.exit("bench: the simulator's RTMR3 is not the event log's replay")
    return Instance(sim_url, Ed25519PrivateKey.generate(), log.to_json())


def default_policy() -> str:
    package = Path(str(resources.files("tdx_kbs")))
    found = sorted(path for path in package.rglob("*.rego") if "default" in path.name)
    if len(found) != 1:
        sys.exit(f"bench: expected one default policy in {package}, found {found}")
    return found[0].read_text()


async def each(
    items: list[T], connections: list[Connection], work: Callable[[T, Connection], Awaitable[None]]
) -> float:
    """Run `work` on every item, one client per connection; the seconds it took."""
    queue = iter(items)

    async def client(connection: Connection) -> None:
        for item in queue:
            await work(item, connection)

    start = time.perf_counter()
    await asyncio.gather(*(client(connection) for connection in connections))
    return time.perf_counter() - start


def expect(answer: Answer, what: str) -> Any:
    if answer.status != 200:
        sys.exit(f"bench: {what} answered {answer.status}: {answer.text[:300]}")
    return answer.json()


def session_cookie(answer: Answer) -> str:
    cookies = SimpleCookie(answer.headers.get("set-cookie", ""))
    if SESSION_COOKIE not in cookies:
        sys.exit("bench: auth set no session cookie")
    return cookies[SESSION_COOKIE].value


@dataclasses.dataclass(frozen=True)
class Mandated:
    """What the issue makes every release do besides its round trips, each per second in this
    process on the run's own sessions (one core, no HTTP)."""

    evidence_rate: float
    """`EvidenceVerifier.verify` of an attest body: nonce, proof of possession, report_data
    binding, full DCAP (collateral warm), the event log replayed to RTMR3."""
    policy_rate: float
    """The shipped Rego policy on a release's input document (rego-cpp, as the broker runs it)."""
    jwe_rate: float
    """The resource as a JWE to a session's TEE key (ECDH-ES+A256KW, A256GCM)."""

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of one release's mandated work."""
        return 1 / self.evidence_rate + 1 / self.policy_rate + 1 / self.jwe_rate


@dataclasses.dataclass(frozen=True)
class Figures:
    auth_seconds: float
    prepare_seconds: float
    attest_seconds: float
    verify_rate: float
    broker_cpu_seconds: float
    """CPU time of the broker's processes (every thread) over the two timed phases."""
    mandated: Mandated
    floor_rate: float = 0.0
    floor_cpu_seconds: float = 0.0
    """CPU time of the lean client and the bare Sanic server per release (3 round trips)."""

    def release_rate(self, sessions: int) -> float:
        return sessions / (self.auth_seconds + self.attest_seconds)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes `pids` so far (all their threads)."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a broker's workers), from /proc."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.extend(process_tree(int(child)))
    return found


async def connections(url: str, count: int) -> list[Connection]:
    return [Connection(url) for _ in range(count)]


async def measure(
    kbs_url: str,
    broker_pids: list[int],
    instance: Instance,
    key: bytes,
    sessions: int,
    concurrency: int,
    seconds: float,
    reference: dict[str, list[str] | None] | None,
    admin_hex: str,
) -> Figures:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    kbs = await connections(kbs_url, concurrency)
    try:
        async with httpx.AsyncClient(base_url=instance.sim_url, limits=limits, timeout=60) as sim:
            request = Request(version=PROTOCOL_VERSION, tee=TEE_TDX, extra_params="").to_json()
            opened: list[Session] = []

            async def auth(_: int, connection: Connection) -> None:
                answer = await connection.post_json("/kbs/v0/auth", request)
                challenge = Challenge.from_json(expect(answer, "auth"))
                opened.append(Session(session_cookie(answer), challenge.nonce))

            cpu_before = cpu_seconds(broker_pids)
            auth_seconds = await each(list(range(sessions)), kbs, auth)
            broker_cpu = cpu_seconds(broker_pids) - cpu_before

            async def prepare(session: Session) -> None:
                session.keys = TeeKeyPair.generate()
                public = session.keys.public
                evidence = await instance.additional_evidence(session.nonce, public)
                binding = runtime_data_binding(session.nonce, public, evidence)
                answer = await sim.get(f"/attest/{binding.hex()}")
                answer.raise_for_status()
                session.quote = answer.content
                session.body = Attestation(
                    runtime_data=RuntimeData(nonce=session.nonce, tee_pubkey=public),
                    tee_evidence=TeeEvidence(
                        primary_evidence=TdxEvidence(quote=session.quote, cc_eventlog=None),
                        additional_evidence=evidence,
                    ),
                    init_data=None,
                ).to_json()

            prepare_seconds = await gather_limited(opened, concurrency, prepare)
        # The broker closes a connection idle past its keep-alive timeout (5 s), which the
        # untimed evidence phase outlasts with many sessions: the releases reconnect.
        for connection in kbs:
            await connection.aclose()
        path = f"/kbs/v0/resource/{store_key_path(instance.pubkey)}"

        async def release(session: Session, connection: Connection) -> None:
            cookie = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}
            attested = await connection.post_json("/kbs/v0/attest", session.body, headers=cookie)
            expect(attested, "attest")
            answer = await connection.request("GET", path, headers=cookie)
            session.jwe = expect(answer, "GET resource")

        cpu_before = cpu_seconds(broker_pids)
        attest_seconds = await each(opened, kbs, release)
        broker_cpu += cpu_seconds(broker_pids) - cpu_before
    finally:
        for connection in kbs:
            await connection.aclose()

    for session in opened:
        assert session.keys is not None
        if session.keys.decrypt(session.jwe) != key:
            sys.exit("bench: a released JWE does not decrypt to the uploaded store key")

    verify_rate = await verification_rate(instance.sim_url, [s.quote for s in opened], seconds)
    mandated = await mandated_rates(
        instance.sim_url, opened, key, path, reference, admin_hex, seconds
    )
    return Figures(auth_seconds, prepare_seconds, attest_seconds, verify_rate, broker_cpu, mandated)


def rate(work: Callable[[int], object], seconds: float, at_least: int) -> float:
    """Calls of `work(n)` per second, for at least `seconds` and `at_least` calls."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < at_least:
        work(n)
        n += 1
    return n / elapsed


async def mandated_rates(
    sim_url: str,
    opened: list[Session],
    key: bytes,
    path: str,
    reference: dict[str, list[str] | None] | None,
    admin_hex: str,
    seconds: float,
) -> Mandated:
    """The mandated work of a release, measured step by step on the run's sessions."""
    root = (await _get(f"{sim_url}/root_ca.pem")).content
    dcap = DcapVerifier.connect(pccs_url=sim_url, root_ca_pem=root)
    try:
        verifier = EvidenceVerifier(dcap)
        now = datetime.now(UTC)
        first = opened[0]
        # The one collateral fetch, not timed; its claims make the policy's input.
        claims = await verifier.verify(Attestation.from_json(first.body), first.nonce, now=now)
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or n < len(opened):
            session = opened[n % len(opened)]
            await verifier.verify(Attestation.from_json(session.body), session.nonce, now=now)
            n += 1
        evidence = n / elapsed
    finally:
        await dcap.aclose()
    policy = ResourcePolicy.compile(default_policy())
    input_doc = policy_input(
        ResourcePath.parse(path.removeprefix("/kbs/v0/resource/")),
        admin_hex,
        claims.to_json(),
        reference=reference,
        admin_hex=admin_hex,
    )
    if not policy.allows(input_doc):
        sys.exit("bench: the shipped policy denies the release's own input")
    policy_per_second = rate(lambda _: policy.allows(input_doc), seconds, 1)
    tee_keys = [dict(session.keys.public.jwk) for session in opened if session.keys is not None]

    def encrypt(n: int) -> None:
        encrypt_resource(key, TeePublicKey.from_jwk(tee_keys[n % len(tee_keys)]))

    jwe = rate(encrypt, seconds, len(tee_keys))
    return Mandated(evidence, policy_per_second, jwe)


async def gather_limited(
    items: list[T], concurrency: int, work: Callable[[T], Awaitable[None]]
) -> float:
    """Run `work` on every item, `concurrency` at a time; the seconds it took."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def verification_rate(sim_url: str, quotes: list[bytes], seconds: float) -> float:
    """tdx-verify's verifications per second of `quotes` (each distinct), collateral warm."""
    root = (await _get(f"{sim_url}/root_ca.pem")).content
    client = PccsClient(sim_url)
    try:
        # The broker's DCAP policy: the TCB status and debug bit are left to the Rego policy.
        policy = Policy(accepted_tcb_statuses=None, allow_debug=True)
        cache = CollateralCache(client, Verifier(root_ca_pem=root, policy=policy))
        now = datetime.now(UTC)
        await cache.verify_quote(quotes[0], now=now)  # the one collateral fetch, not timed
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or n < len(quotes):
            await cache.verify_quote(quotes[n % len(quotes)], now=now)
            n += 1
        return n / elapsed
    finally:
        await client.aclose()


async def round_trip_rate(
    url: str, server_pids: list[int], sessions: int, concurrency: int
) -> tuple[float, float]:
    """A release's three round trips (two POSTs, one GET) per session, against `url`, with the
    same lean client: sessions per second, and the CPU seconds per session of this process
    (the client) and the server's processes together."""
    bare = await connections(url, concurrency)
    cpu_before = time.process_time() + cpu_seconds(server_pids)
    try:

        async def three(_: int, connection: Connection) -> None:
            for method in ("POST", "POST", "GET"):
                body = b"{}" if method == "POST" else b""
                answer = await connection.request(method, "/instance/x", body=body)
                expect(answer, "bare Sanic")

        seconds = await each(list(range(sessions)), bare, three)
        cpu = time.process_time() + cpu_seconds(server_pids) - cpu_before
    finally:
        for connection in bare:
            await connection.aclose()
    return sessions / seconds, cpu / sessions


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url)
    answer.raise_for_status()
    return answer


async def provision(kbs_url: str, admin: Ed25519PrivateKey, instance: Instance, key: bytes) -> None:
    """The admin's policy and store key, then one release through KbsClient (not timed: the
    broker's collateral fetch)."""
    client = KbsClient(kbs_url, timeout=60)
    try:
        await client.set_policy(default_policy(), make_admin_token(admin))
        await client.put_resource(store_key_path(instance.pubkey), key, make_admin_token(admin))
        if await client.get_resource(store_key_path(instance.pubkey), instance) != key:
            sys.exit("bench: the warm-up release did not give the store key")
    finally:
        await client.aclose()


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="tdx-bench-kbs-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(sessions: int, concurrency: int, seconds: float) -> int:
    env = dict(os.environ)
    with temp_dir() as tmp:
        sim_port, kbs_port = free_port(), free_port()
        sim_url, kbs_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{kbs_port}"
        pins = td_image_allowlists(DEFAULT_MR_TD)  # the simulated TD image, as a real broker
        admin = Ed25519PrivateKey.generate()
        admin_pem = tmp / "admin.pub.pem"
        admin_pem.write_bytes(
            admin.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        broker_args = [
            "--host", "127.0.0.1",
            "--port", str(kbs_port),
            "--db-path", str(tmp / "kbs.db"),
            "--storage-key-path", str(tmp / "storage.key"),
            "--admin-pubkey", str(admin_pem),
            "--trusted-root-ca", str(tmp / "sim" / "root_ca.pem"),
            "--pccs-url", sim_url,
            "--mrtd-allowlist", pins["REGISTRY_MRTD_ALLOWLIST"],
            "--rtmr-allowlist", pins["REGISTRY_RTMR_ALLOWLIST"],
            "--no-rate-limit",
            "--log-level", "WARNING",
        ]  # fmt: skip
        with (
            started(
                [
                    program("tdx-sim"),
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--state-dir",
                    str(tmp / "sim"),
                    "--log-level",
                    "WARNING",
                ],
                sim_url + "/root_ca.pem",
                tmp / "sim.log",
                env,
            ),  # fmt: skip
            started(
                [program("tdx-kbs"), *broker_args],
                kbs_url + "/kbs/v0/auth",
                tmp / "kbs.log",
                env,
            ) as broker,
        ):
            assert broker.proc is not None
            # The broker's own reading of its flags: the policy input's `reference`.
            reference = parse_settings(broker_args, {}).reference
            instance = measured_instance(sim_url, admin.public_key().public_bytes_raw())
            # The resource as `tdxctl kbs put-key` uploads it: the owner's signed envelope.
            key = seal_store_key(admin, instance.pubkey, secrets.token_bytes(32))
            asyncio.run(provision(kbs_url, admin, instance, key))
            figures = asyncio.run(
                measure(
                    kbs_url,
                    process_tree(broker.proc.pid),
                    instance,
                    key,
                    sessions,
                    concurrency,
                    seconds,
                    None if reference is None else reference.to_json(),
                    admin.public_key().public_bytes_raw().hex(),
                )
            )
        bare_port = free_port()
        bare_url = f"http://127.0.0.1:{bare_port}"
        with started(
            [sys.executable, str(HERE / "bare_sanic.py"), "--port", str(bare_port)],
            bare_url + "/instance/x",
            tmp / "bare.log",
            env,
        ) as bare:
            assert bare.proc is not None
            floor, floor_cpu = asyncio.run(
                round_trip_rate(bare_url, process_tree(bare.proc.pid), sessions, concurrency)
            )
        figures = dataclasses.replace(figures, floor_rate=floor, floor_cpu_seconds=floor_cpu)
    releases = figures.release_rate(sessions)
    ratio = releases / figures.verify_rate
    print(f"{sessions} sessions, {concurrency} concurrent clients, a keep-alive connection each")
    print(
        f"  auth                 {sessions / figures.auth_seconds:10.0f}/s  "
        f"({figures.auth_seconds:.2f} s, timed)"
    )
    print(
        f"  evidence + sim quote {sessions / figures.prepare_seconds:10.0f}/s  "
        f"({figures.prepare_seconds:.2f} s, the TD's work, not timed)"
    )
    print(
        f"  attest + resource    {sessions / figures.attest_seconds:10.0f}/s  "
        f"({figures.attest_seconds:.2f} s, timed)"
    )
    per_release = figures.broker_cpu_seconds / sessions
    print(
        f"  broker CPU per release (auth + attest + resource, every thread): "
        f"{per_release * 1000:.2f} ms, {1 / per_release:.0f} releases/s per core"
    )
    mandated = figures.mandated
    print("what every release must do, each step alone in the bench's process (one core):")
    print(
        f"  evidence (nonce, possession, binding, DCAP, log replay) "
        f"{mandated.evidence_rate:8.0f}/s  ({1000 / mandated.evidence_rate:.2f} ms)"
    )
    print(
        f"  the shipped Rego policy on a release's input           "
        f"{mandated.policy_rate:8.0f}/s  ({1000 / mandated.policy_rate:.2f} ms)"
    )
    print(
        f"  the JWE to the TEE key                                 "
        f"{mandated.jwe_rate:8.0f}/s  ({1000 / mandated.jwe_rate:.2f} ms)"
    )
    print(
        f"  3 round trips to bare Sanic, client + server CPU       "
        f"{1 / figures.floor_cpu_seconds:8.0f}/s  ({1000 * figures.floor_cpu_seconds:.2f} ms)"
    )
    cores = len(os.sched_getaffinity(0))
    ceiling = cores / (mandated.cpu_seconds + figures.floor_cpu_seconds)
    print(f"{'measurement':48} {'ours/s':>10} {'baseline/s':>11} {'ratio':>7} {'target':>7}")
    mark = "" if ratio >= TARGET else "  (below target)"
    print(
        f"{'release (auth+attest+resource) vs tdx-verify':48} {releases:10.0f} "
        f"{figures.verify_rate:11.0f} {ratio:6.2f}x {TARGET:6.1f}x{mark}"
    )
    per_core = 1 / per_release
    print(
        f"{'release per broker core-second vs tdx-verify':48} {per_core:10.0f} "
        f"{figures.verify_rate:11.0f} {per_core / figures.verify_rate:6.2f}x {'-':>7}"
    )
    print(
        f"{'release vs 3 round trips to bare Sanic':48} {releases:10.0f} "
        f"{figures.floor_rate:11.0f} {releases / figures.floor_rate:6.2f}x {'-':>7}"
    )
    print(
        f"{f'ceiling: those steps only, {cores} cores busy, vs tdx-verify':48} {ceiling:10.0f} "
        f"{figures.verify_rate:11.0f} {ceiling / figures.verify_rate:6.2f}x {'-':>7}"
    )
    return 0 if ratio >= TARGET else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=1000,
        help=f"releases measured, each its own session and quote (1 to {MAX_SESSIONS}; "
        "default 1000)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="at least this long for the tdx-verify baseline (default 3)",
    )
    args = parser.parse_args()
    if not 1 <= args.sessions <= MAX_SESSIONS:
        parser.error(f"--sessions must be 1 to {MAX_SESSIONS}")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be 1 to 256")
    return run(args.sessions, args.concurrency, args.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
