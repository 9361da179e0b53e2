"""End to end, issue 11: after expose through `tdxctl`, the identity service's attested front
(the real nginx) serves the owner's workload. `tdxctl get` verifies the TLS front's attested
certificate before it sends anything and prints the owner's file; `openssl s_client` sees the
certificate with the evidence extension; plain HTTP carries `x-instance-pubkey`; only loopback
reaches the container's port; a certificate from anything but the attested TD is refused with
no request sent; the front comes back after SIGKILL and serves through a restart of the
identity service without a failed request (the stopped service leaves it serving, the next
start adopts it and reloads it with its new certificate, which `tdxctl get` verifies). Real
tdx-sim, registry, identity service, podman, gocryptfs, nginx, OpenSSH, openssl and curl; one
stack; every container, mount, nginx and tmpfs directory is removed afterwards."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.workload import DowntimeProbe
from tdx_service_kit.testing import CountingTlsServer
from tests.conftest import Stack
from tests.procs import free_port, program, stop_front
from tests.workload_support import CONTAINER_PORT, _cleanup, listening

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

EVIDENCE_OID = x509.ObjectIdentifier("2.23.133.5.4.9")
FRONT_BACK_WITHIN = 30.0  # seconds: nginx killed -> serving again (the back-off starts small)
RESTART_DOWNTIME_BOUND = 30.0  # seconds until the TLS port answers after identity-svc restarts
PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


@dataclass
class Cli:
    """`tdxctl` as installed, with the TDXCTL_* defaults of one stack."""

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

    def json(self, *argv: str, status: int = 0) -> dict[str, Any]:
        done = self(*argv, "--json")
        assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


@dataclass
class Front:
    stack: Stack
    cli: Cli
    container: str
    ssh_port: int
    plain_port: int
    tls_port: int
    internal_port: int
    runtime_dir: Path

    def state(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.stack.identity.url + "/instance/state").json()
        return answer

    def nginx_pid(self) -> int | None:
        try:
            return int((self.runtime_dir / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None


@pytest.fixture
def front(make_stack: Callable[..., Stack], tmp_path: Path) -> Iterator[Front]:
    """A fresh instance whose identity service runs the real workload manager and front on
    free ports (the front's tmpfs directory in a private parent under /dev/shm), and `tdxctl`
    configured for it through the TDXCTL_* variables."""
    container = f"tdx-e2e-{secrets.token_hex(4)}"
    clear_dir = tmp_path / "run" / "clear"
    shm_parent = Path("/dev/shm") / f"tdx-e2e-{secrets.token_hex(4)}"
    shm_parent.mkdir(mode=0o700)
    ports = [free_port() for _ in range(4)]
    while len(set(ports)) < 4:
        ports = [free_port() for _ in range(4)]
    ssh_port, plain_port, tls_port, internal_port = ports
    stack: Stack | None = None
    try:
        stack = make_stack(
            identity_env={
                "SSH_LISTEN": "127.0.0.1",
                "SSH_PORT": str(ssh_port),
                "WORKLOAD_PORT": str(plain_port),
                "WORKLOAD_TLS_PORT": str(tls_port),
                "WORKLOAD_INTERNAL_PORT": str(internal_port),
                "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
                "FRONT_RUNTIME_DIR": str(shm_parent / "front"),
                "CLEAR_MOUNT_DIR": str(clear_dir),
                "STORE_KEY_PATH": str(tmp_path / "td-root" / "store.key"),
                "CONTAINER_NAME": container,
            }
        )
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TDXCTL_IDENTITY_URL": stack.identity.url,
            "TDXCTL_REGISTRY_URL": stack.registry.url,
            "TDXCTL_TRUSTED_ROOT_CA": str(tmp_path / "sim-state" / "root_ca.pem"),
            "TDXCTL_PCCS_URL": stack.sim.url,
        }
        yield Front(
            stack,
            Cli(env),
            container,
            ssh_port,
            plain_port,
            tls_port,
            internal_port,
            shm_parent / "front",
        )
    finally:
        if stack is not None:  # its front outlives it: stopped once the service stopped
            stack.identity.stop()
            stop_front(stack.identity)
        _cleanup(container, clear_dir)
        shutil.rmtree(shm_parent, ignore_errors=True)


def wait_for(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll `check` until true; the seconds it took; fails the test after `within` seconds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"{what}: not within {within:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - start


def tls_serving(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{port}/", verify=False, timeout=1).is_success
        except httpx.HTTPError:
            return False

    return check


def s_client_certificate(port: int) -> x509.Certificate:
    """The certificate `openssl s_client` receives from the front (no verification)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    found = PEM_CERT.search(done.stdout)
    assert found is not None, (done.returncode, done.stdout, done.stderr)
    return x509.load_pem_x509_certificate(found.group(0))


def non_loopback_ipv4() -> list[str]:
    """This machine's IPv4 addresses that are not loopback: `ip -4 addr`, and the hostname's."""
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
    )
    found = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", done.stdout)
    with contextlib.suppress(OSError):
        found.append(socket.gethostbyname(socket.gethostname()))
    return sorted({a for a in found if not a.startswith("127.")})


def self_signed(key: ec.EllipticCurvePrivateKey, extension: x509.Extension[Any] | None) -> bytes:
    """A self-signed certificate of `key` for 127.0.0.1, with `extension` when given."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    )
    if extension is not None:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_the_attested_front_end_to_end(front: Front, image: str, tmp_path: Path) -> None:
    cli = front.cli
    operator_key, owner_key = tmp_path / "operator.pem", tmp_path / "owner.pem"
    cli.json("keygen", str(operator_key))
    owner = cli.json("keygen", str(owner_key))["pubkey"]
    instance = str(httpx.get(front.stack.identity.url + "/instance/pubkey").json()["pubkey"])
    token = cli.json("operator", "register", "--key", str(operator_key))["owner_token"]
    cli.json("owner", "register", "--key", str(owner_key), "--token", token)
    cli.json(
        "workload", "configure", "--key", str(owner_key), "--image", image,
        "--persist-dir", "/www", "--port", str(CONTAINER_PORT),
    )  # fmt: skip
    secret = "attested-tls-secret-" + secrets.token_hex(8)
    done = cli(
        "ssh", "--key", str(owner_key), "--ssh-port", str(front.ssh_port),
        "--", f"echo {secret} > /www/index.html",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Before expose, no front listens.
    assert front.state()["front"] != "serving"
    assert not listening(front.plain_port)
    assert not listening(front.tls_port)
    assert cli.json("workload", "expose", "--key", str(owner_key), "--image", image)["seq"] == 2
    wait_for(tls_serving(front.tls_port), 30, "the TLS front after expose")
    assert front.state()["front"] == "serving"
    url = f"https://127.0.0.1:{front.tls_port}/index.html"

    # a. tdxctl get verifies the TD's certificate, then prints the owner's file.
    got = cli("get", url, "--expect-owner", owner)
    assert got.returncode == 0, got.stderr
    assert got.stdout == secret + "\n"
    answer = cli.json("get", url, "--expect-owner", owner)
    assert answer["status"] == 200
    assert answer["instance_pubkey"] == instance
    assert [instance] == [v for k, v in answer["headers"] if k.lower() == "x-instance-pubkey"]
    stranger = cli.json("get", url, "--expect-owner", "00" * 32, status=1)
    assert stranger["error"], stranger

    # b. openssl s_client sees the certificate with the evidence extension, non-critical, for
    # the TLS key the service reports; curl -k gets the file over TLS.
    td_cert = s_client_certificate(front.tls_port)
    extension = td_cert.extensions.get_extension_for_oid(EVIDENCE_OID)
    assert extension.critical is False
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value  # the CBOR evidence: parsed by tdxctl get above
    spki = td_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert digest.finalize().hex() == front.state()["tls_spki_sha256"]
    assert answer["certificate_sha256"] == td_cert.fingerprint(hashes.SHA256()).hex()
    curl = subprocess.run(
        ["curl", "-sSk", "-D", "-", url], capture_output=True, text=True, timeout=30, check=False
    )
    assert curl.returncode == 0, curl.stderr
    assert f"x-instance-pubkey: {instance}" in curl.stdout.lower()
    assert curl.stdout.endswith(secret + "\n")

    # c. plain HTTP through the front carries the instance's key.
    plain = subprocess.run(
        ["curl", "-sS", "-D", "-", f"http://127.0.0.1:{front.plain_port}/index.html"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    head, _, body = plain.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert f"x-instance-pubkey: {instance}" in head.lower().splitlines()
    assert body == secret + "\n"

    # d. the container's port is published on 127.0.0.1 only, and a non-loopback address of
    # this machine does not reach it.
    published = subprocess.run(
        ["podman", "port", front.container], capture_output=True, text=True, check=True
    ).stdout.split()
    assert published == [f"{CONTAINER_PORT}/tcp", "->", f"127.0.0.1:{front.internal_port}"]
    assert listening(front.internal_port)  # loopback reaches it (the front's upstream)
    addresses = non_loopback_ipv4()
    assert addresses, "this machine has no non-loopback IPv4 address to try"
    for address in addresses:  # e.g. the host's own and podman's bridge (10.88.0.1)
        for port in (front.internal_port, front.plain_port, front.tls_port):
            with socket.socket() as s:
                s.settimeout(3)
                assert s.connect_ex((address, port)) != 0, (address, port)
    print(f"\nno connection to the container's port from {', '.join(addresses)}")

    # e. a certificate made by anything but the attested TD is refused, no request sent.
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    for cert_pem in (
        self_signed(impostor_key, None),  # a plain self-signed certificate, no evidence
        self_signed(impostor_key, extension),  # the TD's genuine evidence, another key
    ):
        with CountingTlsServer(cert_pem, key_pem(impostor_key), body=b"impostor\n") as server:
            refused = cli.json(
                "get", f"https://127.0.0.1:{server.port}/index.html",
                "--expect-owner", owner, status=1,
            )  # fmt: skip
            assert refused["error"], refused
            assert server.requests == []
    # The TD's own certificate with another key: no TLS server can even present it (the
    # handshake's signature would be made with a key the certificate does not name).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    copy, other = tmp_path / "td-cert.pem", tmp_path / "other-key.pem"
    copy.write_bytes(td_cert.public_bytes(serialization.Encoding.PEM))
    other.write_bytes(key_pem(impostor_key))
    with pytest.raises(ssl.SSLError, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        context.load_cert_chain(copy, other)

    # f. the front killed with SIGKILL comes back; a restart of identity-svc keeps serving.
    killed = front.nginx_pid()
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    back = wait_for(
        lambda: front.nginx_pid() not in (None, killed) and tls_serving(front.tls_port)(),
        FRONT_BACK_WITHIN,
        "the front after SIGKILL",
    )
    print(f"\nfront back {back * 1000:.0f}ms after SIGKILL of nginx")
    assert front.state()["front"] == "serving"
    assert cli("get", url, "--expect-owner", owner).stdout == secret + "\n"

    probes = {
        "plain": DowntimeProbe(f"http://127.0.0.1:{front.plain_port}/index.html"),
        "tls": DowntimeProbe(f"https://127.0.0.1:{front.tls_port}/index.html"),
    }
    for probe in probes.values():
        probe.start()
    time.sleep(0.5)
    master = front.nginx_pid()
    before = front.state()["tls_spki_sha256"]
    tls_down = time.perf_counter()
    front.stack.restart("identity")
    wait_for(tls_serving(front.tls_port), RESTART_DOWNTIME_BOUND, "TLS after identity restart")
    tls_down = time.perf_counter() - tls_down
    time.sleep(0.5)
    downtimes = {name: probe.stop() for name, probe in probes.items()}
    print(
        f"identity-svc restart: through the front, plain HTTP down "
        f"{downtimes['plain'] * 1000:.0f}ms ({probes['plain'].failures} of "
        f"{probes['plain'].requests} requests failed), TLS down {downtimes['tls'] * 1000:.0f}ms "
        f"({probes['tls'].failures} of {probes['tls'].requests} failed); TLS answering "
        f"{tls_down * 1000:.0f}ms after the stop began"
    )
    for name, probe in probes.items():
        assert probe.requests > 10, name
        assert probe.failures == 0, (name, probe.failures, downtimes[name])
    state = front.state()
    assert state["front"] == "serving"
    assert front.nginx_pid() == master, "the same nginx, adopted by the new start"
    # A new start made a new TLS key and certificate: nginx serves it, and it verifies again.
    assert state["tls_spki_sha256"] != before
    served = (
        s_client_certificate(front.tls_port)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(served)
    assert digest.finalize().hex() == state["tls_spki_sha256"]
    again = cli.json("get", url, "--expect-owner", owner)
    assert again["body"] == secret + "\n"
    assert again["certificate_sha256"] != answer["certificate_sha256"]
