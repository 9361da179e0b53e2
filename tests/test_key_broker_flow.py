"""End to end, issue 10's promise with the real programs: the owner uploads a store key and a
policy to the key broker with `tdxctl`, configures the workload, writes data over SSH; the
identity service reboots and reads it back with the key from the broker; the key is in no file;
a broker that is down leaves the workload locked until it is back, then it recovers by itself;
a TD whose event log names another owner, or a quote under a root the broker does not trust,
gets no key (both driven with the protocol client against a second simulated TD, the first also
through a real identity service of a third).

Real tdx-sim, tdx-registry, tdx-kbs, identity-svc (KEY_BROKER_URL), tdxctl, podman, gocryptfs
and OpenSSH (through `tdxctl ssh`); one stack for the whole walk (CI budget), every container
and mount removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from tdx_kbs_protocol import (
    IdentityEvidence,
    KbsClient,
    KbsRefused,
    TdxEvidence,
    TeePublicKey,
    make_admin_token,
    open_store_key,
    seal_store_key,
    store_key_path,
)
from tdx_measure import BootEvent, EventLog, IdentityEvent, event_digest
from tests import procs
from tests.procs import Program, free_port, program
from tests.workload_support import CONTAINER_PORT, _cleanup, listening

RECOVERY_BOUND = 30.0
"""Seconds the workload may take to recover by itself once the broker is back."""


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Cli:
    """`tdxctl` as installed, with the TDXCTL_* defaults of the stack."""

    env: dict[str, str]

    def __call__(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [program("tdxctl"), *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = self(*argv)
        assert done.returncode == 0, (argv, done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *argv: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.ok(*argv, "--json").stdout)
        return answer


@dataclass
class Td:
    tmp: Path
    sim: Program
    registry: Program
    kbs: Program
    identity: Program
    cli: Cli
    owner_key: Path
    operator_key: Path
    ssh_port: int
    workload_port: int
    container: str
    clear_dir: Path

    def reboot_identity(self) -> None:
        """Stop the identity service and lose what a TD reboot loses (the container, the clear
        mount: TD memory), then start it on the same STORAGE_PATH. A process restart alone
        would keep the mounted store and its running container, and need no key."""
        self.identity.stop()
        _cleanup(self.container, self.clear_dir)
        assert not mounted(self.clear_dir)
        self.identity.start()

    def state(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.identity.url + "/instance/state").json()
        return answer

    def instance(self) -> str:
        return str(httpx.get(self.identity.url + "/instance/pubkey").json()["pubkey"])

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "ssh", "--key", str(self.owner_key), "--ssh-port", str(self.ssh_port), "--", command
        )


def mounted(path: Path) -> bool:
    with Path("/proc/self/mountinfo").open() as mounts:
        return any(line.split(" ")[4] == str(path) for line in mounts)


def public_pem(private_pem: Path, into: Path) -> Path:
    """The PEM public key of the ed25519 key in `private_pem` (as `tdxctl keygen` writes it)."""
    key = serialization.load_pem_private_key(private_pem.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    into.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return into


def load_owner(private_pem: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(private_pem.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


@pytest.fixture
def td(tmp_path: Path) -> Iterator[Td]:
    """sim, registry, tdx-kbs (admin key: the owner's) and an identity service that takes its
    store key from that broker and runs the real workload manager; `tdxctl` pointed at them."""
    container = f"tdx-e2e-{secrets.token_hex(4)}"
    clear_dir = tmp_path / "run" / "clear"
    ssh_port, workload_port = free_port(), free_port()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    cli = Cli(env)
    operator_key, owner_key = tmp_path / "operator.pem", tmp_path / "owner.pem"
    cli.ok("keygen", str(operator_key))
    cli.ok("keygen", str(owner_key))
    with contextlib.ExitStack() as stack:
        stack.callback(_cleanup, container, clear_dir)
        sim = procs.sim(tmp_path)
        stack.enter_context(procs.running(sim))
        root = tmp_path / "sim-state" / "root_ca.pem"
        reg = procs.registry(tmp_path, sim.url, root)
        stack.enter_context(procs.running(reg))
        kbs = procs.kbs(tmp_path, sim.url, root, public_pem(owner_key, tmp_path / "owner.pub"))
        stack.enter_context(procs.running(kbs))
        ident = procs.identity(
            tmp_path,
            sim.url,
            reg.url,
            KEY_BROKER_URL=kbs.url,
            SSH_LISTEN="127.0.0.1",
            SSH_PORT=str(ssh_port),
            WORKLOAD_PORT=str(workload_port),
            WORKLOAD_PUBLISH_HOST="127.0.0.1",
            CLEAR_MOUNT_DIR=str(clear_dir),
            STORE_KEY_PATH=str(tmp_path / "td-root" / "store.key"),
            CONTAINER_NAME=container,
            # A short back-off (the service's default doubles to 30 s): the recovery below
            # is bounded by RECOVERY_BOUND.
            KEY_BROKER_RETRY_INITIAL="0.5",
            KEY_BROKER_RETRY_MAX="2",
        )
        stack.callback(procs.stop_front, ident)  # once it stopped: the front it left serving
        stack.enter_context(procs.running(ident))
        env |= {
            "TDXCTL_IDENTITY_URL": ident.url,
            "TDXCTL_REGISTRY_URL": reg.url,
            "TDXCTL_TRUSTED_ROOT_CA": str(root),
            "TDXCTL_PCCS_URL": sim.url,
            "TDXCTL_KBS_URL": kbs.url,
        }
        yield Td(
            tmp_path, sim, reg, kbs, ident, cli, owner_key, operator_key, ssh_port,
            workload_port, container, clear_dir,
        )  # fmt: skip


# --- the key in no file ---------------------------------------------------------------------


def key_encodings(key: bytes) -> set[bytes]:
    """Every way the key could be written down: raw, hex (both cases), and base64 (standard
    and URL-safe, with and without padding), including the characters that encode the key
    inside a longer base64 text at each of the three byte alignments."""
    forms = {key, key.hex().encode(), key.hex().upper().encode()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(key)
        forms |= {whole, whole.rstrip(b"=")}
        for shift in range(3):
            text = encode(bytes(shift) + key)
            first = -(-8 * shift // 6)  # the first character made of key bits only
            last = 8 * (shift + len(key)) // 6  # past the last such character
            forms.add(text[first:last])
    return forms


@dataclass
class Search:
    files: int = 0
    bytes: int = 0
    found: list[str] = field(default_factory=list)


def search_files(roots: Iterable[Path], needles: set[bytes]) -> Search:
    """Read every regular file under `roots` (links not followed, unreadable files passed
    over) and name those holding any of `needles`, in content or in name."""
    result = Search()
    seen: set[tuple[int, int]] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for directory, _, names in os.walk(root, onerror=lambda _: None):
            for name in names:
                path = Path(directory) / name
                try:
                    info = path.lstat()
                    if not path.is_file() or path.is_symlink():
                        continue
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                    data = path.read_bytes()
                except OSError:  # vanished, unreadable, or a socket's peer gone
                    continue
                result.files += 1
                result.bytes += len(data)
                if any(needle in data or needle in name.encode() for needle in needles):
                    result.found.append(str(path))
    return result


TEMP_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run"))


def assert_in_no_file(tmp_path: Path, *keys: bytes) -> None:
    """None of `keys` is in any file of the test's directory (every program's state, database,
    storage key and log live there) or of the temp dirs, in any encoding."""
    needles = set().union(*(key_encodings(key) for key in keys))
    search = search_files([tmp_path, *TEMP_DIRS], needles)
    assert search.files > 0 and search.bytes > 0
    assert search.found == [], f"a store key is written in {search.found}"


# --- evidence driven from the test (a second simulated TD sharing the platform's PKI) -------


@dataclass
class SimTd:
    """A TD of the same simulated platform (the PKI copied, RTMRs its own) whose RTMR3 holds
    the event log the test writes, and whose instance key the test holds."""

    sim: Program
    key: Ed25519PrivateKey
    log: EventLog

    @property
    def instance(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def extend(self, event: BootEvent | IdentityEvent) -> None:
        """Extend `event` into the TD's RTMR3 (and the log, unless it is the boot event the
        log starts with)."""
        if not isinstance(event, BootEvent):
            self.log.append(event)
        answer = httpx.post(
            f"{self.sim.url}/rtmr/3/extend", json={"digest": event_digest(event).hex()}
        )
        answer.raise_for_status()

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        return IdentityEvidence.create(self.key, nonce, tee_pubkey, self.log.to_json()).encode()

    async def quote(self, report_data: bytes) -> TdxEvidence:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.sim.url}/attest/{report_data.hex()}", timeout=30)
        answer.raise_for_status()
        return TdxEvidence(quote=answer.content, cc_eventlog=None)


def sim_td(sim: Program, operator: bytes, owner: bytes) -> SimTd:
    boot = BootEvent.fresh(int(time.time()))
    td = SimTd(sim, Ed25519PrivateKey.generate(), EventLog(boot))
    td.extend(boot)
    td.extend(IdentityEvent("operator", operator))
    td.extend(IdentityEvent("owner", owner))
    assert td.log.replay().hex() == httpx.get(f"{sim.url}/rtmr").json()["rtmr3"]
    return td


def fetch_key(kbs_url: str, td: SimTd) -> bytes:
    """The store-key resource the broker at `kbs_url` releases to `td` (the owner's envelope)."""

    async def get() -> bytes:
        client = KbsClient(kbs_url, timeout=30)
        try:
            return await client.get_resource(store_key_path(td.instance), td)
        finally:
            await client.aclose()

    return asyncio.run(get())


def put_key(kbs_url: str, admin: Ed25519PrivateKey, instance: bytes, key: bytes) -> None:
    """Upload `key` for `instance` as `tdxctl kbs put-key` does: in the envelope the admin (the
    owner) signs for that instance."""
    envelope = seal_store_key(admin, instance, key)

    async def put() -> None:
        client = KbsClient(kbs_url, timeout=30)
        try:
            await client.put_resource(store_key_path(instance), envelope, make_admin_token(admin))
        finally:
            await client.aclose()

    asyncio.run(put())


def other_root_ca(path: Path) -> Path:
    """A self-signed CA certificate that signs nothing the sim presents."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the sim's root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# --- the walk -------------------------------------------------------------------------------


def locked_reason(state: dict[str, Any]) -> str:
    reason = state["workload_reason"]
    assert isinstance(reason, str) and reason, state
    return reason


def wait_for_workload(td: Td, status: str, bound: float) -> dict[str, Any]:
    """GET /instance/state once it says `"workload": status` (fails after `bound` seconds)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        state = td.state()
        if state["workload"] == status:
            return state
        time.sleep(0.2)
    pytest.fail(f"the workload is not {status} after {bound:g} s: {td.state()}")


def default_policy() -> Path:
    """The default resource policy shipped with the broker (package data)."""
    package = Path(str(resources.files("tdx_kbs")))
    found = [path for path in package.rglob("*.rego") if "default" in path.name]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.e2e
@pytest.mark.podman
def test_the_store_key_comes_only_from_the_broker_and_only_to_the_attested_owner(
    td: Td, image: str, tmp_path: Path
) -> None:
    cli, owner_key = td.cli, td.owner_key
    instance = td.instance()

    # (a) Registration, the owner's policy and key at the broker, configure, data over SSH.
    token = cli.json("operator", "register", "--key", str(td.operator_key))["owner_token"]
    cli.json("owner", "register", "--key", str(owner_key), f"--token={token}")
    policy = tmp_path / "policy.rego"
    shutil.copyfile(default_policy(), policy)
    cli.ok("kbs", "set-policy", "--admin-key", str(owner_key), str(policy))
    store_key = secrets.token_bytes(32)
    key_file = tmp_path / "store-key.bin"
    key_file.touch(0o600)
    key_file.write_bytes(store_key)
    done = cli.ok(
        "kbs", "put-key", "--admin-key", str(owner_key), "--instance", instance,
        "--key-file", str(key_file),
    )  # fmt: skip
    key_file.unlink()
    assert store_key.hex() not in done.stdout + done.stderr
    configured = cli.json(
        "workload", "configure", "--key", str(owner_key), "--image", image,
        "--persist-dir", "/www", "--port", str(CONTAINER_PORT),
    )  # fmt: skip
    assert configured == {"status": "success", "seq": 1}
    secret = "kbs-secret-" + secrets.token_hex(8)
    wrote = td.ssh(f"echo {secret} > /www/index.html")
    assert wrote.returncode == 0, wrote.stderr

    # (b) A reboot on the same STORAGE_PATH: the store is mounted again with the key that the
    # broker releases to fresh evidence.
    td.reboot_identity()
    wait_for_workload(td, "running", RECOVERY_BOUND)
    read = td.ssh("cat /www/index.html")
    assert (read.returncode, read.stdout) == (0, secret + "\n"), read.stderr

    # (c) The key is in no file: the identity's state, the broker's files and logs, temp dirs.
    assert not (tmp_path / "td-root" / "store.key").exists()
    assert (tmp_path / "kbs" / "kbs.db").is_file() and (tmp_path / "kbs" / "storage.key").is_file()
    assert_in_no_file(tmp_path, store_key)

    # (d) The broker down at a restart: locked, closed; back: recovered by itself.
    td.kbs.stop()
    td.reboot_identity()
    assert "key broker" in locked_reason(wait_for_workload(td, "locked", RECOVERY_BOUND))
    assert not listening(td.ssh_port) and not listening(td.workload_port)
    assert td.ssh("true").returncode != 0
    td.kbs.start()  # the same database and storage key
    wait_for_workload(td, "running", RECOVERY_BOUND)
    read = td.ssh("cat /www/index.html")
    assert (read.returncode, read.stdout) == (0, secret + "\n"), read.stderr

    # (e) Evidence the broker refuses. A TD of the same platform whose RTMR3 holds the log the
    # test writes: released while the log names the uploader as owner (the control) ...
    owner, operator = load_owner(owner_key), load_owner(td.operator_key)
    shutil.copytree(tmp_path / "sim-state" / "pki", tmp_path / "sim2-state" / "pki")
    sim2 = procs.sim(tmp_path, state=tmp_path / "sim2-state")
    other_key = secrets.token_bytes(32)
    untrusted = procs.kbs(
        tmp_path,
        td.sim.url,
        other_root_ca(tmp_path / "other-root.pem"),
        tmp_path / "owner.pub",
        name="kbs-untrusted",
    )
    with procs.running(sim2, untrusted):
        other = sim_td(
            sim2, operator.public_key().public_bytes_raw(), owner.public_key().public_bytes_raw()
        )
        put_key(td.kbs.url, owner, other.instance, other_key)
        put_key(untrusted.url, owner, other.instance, other_key)
        released = fetch_key(td.kbs.url, other)
        owner_pub = owner.public_key().public_bytes_raw()
        assert open_store_key(released, owner_pubkey=owner_pub, instance_pubkey=other.instance) == (
            other_key
        )

        # ... refused by a broker that does not trust the quote's root ...
        with pytest.raises(KbsRefused) as refused:
            fetch_key(untrusted.url, other)
        assert (refused.value.status, refused.value.variant) == (401, "AttestationError")
        assert "root CA" in refused.value.detail, refused.value

        # ... and refused once the TD's log names another owner than the uploader.
        stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        other.extend(IdentityEvent("owner", stranger))
        with pytest.raises(KbsRefused) as refused:
            fetch_key(td.kbs.url, other)
        assert (refused.value.status, refused.value.variant) == (401, "PolicyDeny")

    # (e) The same refusal through the real programs: the identity service of another TD of
    # the platform, whose owner is not the key's uploader, configures: no key, nothing done.
    shutil.copytree(tmp_path / "sim-state" / "pki", tmp_path / "sim3-state" / "pki")
    sim3 = procs.sim(tmp_path, state=tmp_path / "sim3-state")
    container, clear_dir = f"{td.container}-other", tmp_path / "run" / "other-clear"
    stranger_key = tmp_path / "stranger.pem"
    cli.ok("keygen", str(stranger_key))
    try:
        with procs.running(sim3):
            ident = procs.identity(
                tmp_path,
                sim3.url,
                td.registry.url,
                STORAGE_PATH=str(tmp_path / "identity-other"),
                KEY_BROKER_URL=td.kbs.url,
                SSH_LISTEN="127.0.0.1",
                SSH_PORT=str(free_port()),
                WORKLOAD_PORT=str(free_port()),
                WORKLOAD_PUBLISH_HOST="127.0.0.1",
                CLEAR_MOUNT_DIR=str(clear_dir),
                STORE_KEY_PATH=str(tmp_path / "td-root-other" / "store.key"),
                CONTAINER_NAME=container,
            )
            with procs.running(ident):
                third = Cli(
                    cli.env | {"TDXCTL_IDENTITY_URL": ident.url, "TDXCTL_PCCS_URL": sim3.url}
                )
                instance3 = str(httpx.get(ident.url + "/instance/pubkey").json()["pubkey"])
                token = third.json("operator", "register", "--key", str(td.operator_key))[
                    "owner_token"
                ]
                third.json("owner", "register", "--key", str(stranger_key), f"--token={token}")
                third_key = secrets.token_bytes(32)
                put_key(td.kbs.url, owner, bytes.fromhex(instance3), third_key)
                refused_configure = third(
                    "workload", "configure", "--key", str(stranger_key), "--image", image,
                    "--persist-dir", "/www", "--port", str(CONTAINER_PORT),
                )  # fmt: skip
                assert refused_configure.returncode == 1, refused_configure
                assert "PolicyDeny" in refused_configure.stdout + refused_configure.stderr
                state = httpx.get(ident.url + "/instance/state").json()
                assert (state["state"], state["last_seq"]) == ("owner_registered", 0), state
                assert not mounted(clear_dir)
                podman = subprocess.run(
                    ["podman", "ps", "--all", "--quiet", "--filter", f"name=^{container}$"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                assert podman.stdout.strip() == "", "a container of the refused configure"
    finally:
        _cleanup(container, clear_dir)

    # Once more at the end, after the locked start, the recovery and every upload.
    assert_in_no_file(tmp_path, store_key, other_key, third_key)


def test_the_key_search_finds_every_encoding_of_the_key(tmp_path: Path) -> None:
    """The search the walk relies on: a key written raw, in hex of either case, or inside a
    longer base64 text (standard or URL-safe, any alignment, padded or not) is found."""
    key = secrets.token_bytes(32)
    writings = [
        b"x" + key + b"y",
        json.dumps({"key": key.hex()}).encode(),
        key.hex().upper().encode(),
    ]
    for prefix in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(secrets.token_bytes(prefix) + key + secrets.token_bytes(prefix + 1))
            writings += [blob, blob.rstrip(b"=")]
    for i, data in enumerate(writings):
        (tmp_path / f"{i}.bin").write_bytes(data)
    (tmp_path / "unrelated.bin").write_bytes(secrets.token_bytes(4096))
    search = search_files([tmp_path], key_encodings(key))
    assert search.files == len(writings) + 1
    assert sorted(search.found) == sorted(str(tmp_path / f"{i}.bin") for i in range(len(writings)))
