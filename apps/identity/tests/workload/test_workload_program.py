"""The real `identity-svc` program with the real workload: configure, kill -9, restart, expose,
and the front serving across SIGTERM and kill -9 of the service (the next start adopts it with
its new certificate).

In-process tests run on pytest's event loop; this one runs Sanic's own, in its own process, as
operators do: children it spawns (podman, gocryptfs) must neither hang it nor keep its sockets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import MockTdxAndRegistryHandler, serve_mock_tdx

from tdx_identity.settings import DEFAULT_FRONT_RUNTIME_PARENT
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_report_data import sign_instance_v2
from tdx_service_kit.testing import Program as KitProgram
from tdx_service_kit.testing import free_port

from .conftest import _lazy_unmount, _remove_labelled, require_program
from .test_workload_manager import port_open


@pytest.fixture
def upstream() -> Iterator[str]:
    with serve_mock_tdx(MockTdxAndRegistryHandler) as server:
        yield server.url


class Program:
    """Starts and stops `identity-svc` on fixed ports and paths, so restarts find its state."""

    def __init__(self, tmp_path: Path, upstream: str) -> None:
        self.port, self.ssh_port, self.workload_port = free_port(), free_port(), free_port()
        self.tls_port, self.internal_port = free_port(), free_port()
        self.container = f"tdxwl-{secrets.token_hex(5)}"
        self.clear = tmp_path / "run" / "clear"
        self.log = tmp_path / "identity.log"
        self.argv = [
            sys.executable, "-m", "tdx_identity.cli",
            "--port", str(self.port),
            "--storage-path", str(tmp_path / "storage"),
            "--configfs-tsm-path", str(tmp_path / "absent"),
            "--mock-tdx-url", upstream,
            "--registry-url", upstream,
            "--ssh-listen", "127.0.0.1",
            "--ssh-port", str(self.ssh_port),
            "--workload-port", str(self.workload_port),
            "--workload-tls-port", str(self.tls_port),
            "--workload-internal-port", str(self.internal_port),
            "--workload-publish-host", "127.0.0.1",
            "--clear-mount-dir", str(self.clear),
            "--store-key-path", str(tmp_path / "td-root" / "store.key"),
            "--container-name", self.container,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_PATH", "MOCK_TDX_URL")}
        self.program = KitProgram(
            name="identity-svc",
            argv=self.argv,
            env=env,
            url=f"http://127.0.0.1:{self.port}",
            ready_path="/instance/pubkey",
            log_path=self.log,
        )
        self.client = httpx.Client(base_url=self.program.url, timeout=60)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.program.proc

    def start(self) -> None:
        self.program.start()

    def kill(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def state(self) -> str:
        value: str = self.client.get("/instance/state").json()["state"]
        return value

    @property
    def front_dir(self) -> Path:
        """The front's runtime dir: the default, one per service port."""
        return DEFAULT_FRONT_RUNTIME_PARENT / f"front-{self.port}"

    def serving_state(self) -> dict[str, object]:
        """`GET /instance/state` once the front serves (recovery runs before the service
        answers; bounded anyway)."""
        deadline = time.monotonic() + 20
        while True:
            state: dict[str, object] = self.client.get("/instance/state").json()
            if state["front"] == "serving" or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def front_pid(self) -> int:
        return int((self.front_dir / "nginx.pid").read_text().strip())

    def served_spki_sha256(self) -> str:
        """SHA-256 of the SPKI of the certificate the TLS port shows now (hex)."""
        pem = ssl.get_server_certificate(("127.0.0.1", self.tls_port), timeout=5)
        spki = (
            x509.load_pem_x509_certificate(pem.encode())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return hashlib.sha256(spki).hexdigest()


def nginx() -> Path:
    return installed_helpers({"nginx": HELPER_ROLES["nginx"]})["nginx"]


@pytest.fixture
def program(tmp_path: Path, upstream: str, workload_image: str) -> Iterator[Program]:
    for name in ("podman", "gocryptfs", "fusermount3"):
        require_program(name)
    prog = Program(tmp_path, upstream)
    try:
        yield prog
    finally:
        if prog.process is not None and prog.process.poll() is None:
            prog.process.kill()
            prog.process.wait(timeout=30)
        prog.client.close()
        stop_left_front(prog.front_dir, nginx())  # the explicit stop of the front left serving
        _remove_labelled("podman", prog.container)
        _lazy_unmount(prog.clear)


def _ssh(program: Program, key_file: Path, command: str) -> tuple[int, bytes]:
    kind, blob = program.client.get("/workload/ssh-host-key").json()["public_key"].split()
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[127.0.0.1]:{program.ssh_port}",
        kind,
        paramiko.PKey.from_type_string(kind, base64.b64decode(blob)),
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=program.ssh_port,
        username="owner",
        key_filename=str(key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command(command, timeout=30)
        out = stdout.read()
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def test_the_program_configures_survives_kill_9_exposes_and_restarts_exposed(
    program: Program, workload_image: str, tmp_path: Path
) -> None:
    owner = Ed25519PrivateKey.generate()
    key_file = tmp_path / "owner"
    key_file.write_bytes(
        owner.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    program.start()
    instance = bytes.fromhex(program.client.get("/instance/pubkey").json()["pubkey"])
    operator = Ed25519PrivateKey.generate()
    token = program.client.post(
        "/operator/register",
        json={
            "pubkey": operator.public_key().public_bytes_raw().hex(),
            "signature": sign_instance_v2(operator, "operator", instance).hex(),
        },
    ).json()["owner_token"]
    registered = program.client.post(
        "/owner/register",
        json={
            "pubkey": owner.public_key().public_bytes_raw().hex(),
            "signature": sign_instance_v2(owner, "owner", instance).hex(),
        },
        headers={"x-token": token},
    )
    assert registered.status_code == 200

    def signed(path: str, body: dict[str, object]) -> httpx.Response:
        seq = program.client.get("/instance/state").json()["last_seq"] + 1
        sequenced = {
            "action": path.rsplit("/", 1)[-1],
            "seq": seq,
            "instance_pubkey": instance.hex(),
        }
        raw = json.dumps(sequenced | body).encode()
        return program.client.post(
            path, content=raw, headers={"x-signature": owner.sign(raw).hex()}
        )

    configured = signed(
        "/workload/configure", {"image": workload_image, "persist_dirs": ["/www"], "port": 8080}
    )
    assert configured.status_code == 200, configured.text
    marker = secrets.token_hex(12)
    assert _ssh(program, key_file, f"printf %s {marker} > /www/index.html") == (0, b"")

    program.kill(signal.SIGKILL)
    program.start()  # binds the same HTTP port: no child kept the old listening socket
    assert program.state() == "configured"
    assert _ssh(program, key_file, "cat /www/index.html") == (0, marker.encode())

    assert signed("/workload/expose", {"image": workload_image}).status_code == 200
    assert not port_open(program.ssh_port)
    exposed = program.client.get("/instance/state").json()
    assert program.served_spki_sha256() == exposed["tls_spki_sha256"]
    nginx_pid = program.front_pid()
    assert program.kill(signal.SIGTERM) == 0
    # The service is gone; its front is not (as the container is not): it keeps serving.
    served = httpx.get(f"http://127.0.0.1:{program.workload_port}/index.html", timeout=5)
    assert (served.text, served.headers["x-instance-pubkey"]) == (marker, instance.hex())
    assert program.served_spki_sha256() == exposed["tls_spki_sha256"]
    program.start()
    assert program.state() == "exposed"
    assert not port_open(program.ssh_port)
    state = program.serving_state()
    assert (state["front"], program.front_pid()) == ("serving", nginx_pid), "adopted"
    assert state["tls_spki_sha256"] != exposed["tls_spki_sha256"], "a new key at every start"
    assert program.served_spki_sha256() == state["tls_spki_sha256"], "and nginx serves it"
    served = httpx.get(f"http://127.0.0.1:{program.workload_port}/index.html", timeout=5)
    assert served.text == marker
    assert served.headers["x-instance-pubkey"] == instance.hex(), "served by the front"

    # kill -9 with the front serving: nginx is not the service's to take down (no parent-death
    # signal); it serves meanwhile, and the next start adopts it with a new certificate.
    first_key = state["tls_spki_sha256"]
    program.kill(signal.SIGKILL)
    served = httpx.get(f"http://127.0.0.1:{program.workload_port}/index.html", timeout=5)
    assert served.text == marker
    program.start()
    state = program.serving_state()
    assert (state["state"], state["front"]) == ("exposed", "serving")
    assert state["tls_spki_sha256"] != first_key
    assert program.served_spki_sha256() == state["tls_spki_sha256"]
    assert program.front_pid() == nginx_pid
    served = httpx.get(f"http://127.0.0.1:{program.workload_port}/index.html", timeout=5)
    assert (served.text, served.headers["x-instance-pubkey"]) == (marker, instance.hex())
    assert program.kill(signal.SIGTERM) == 0
    assert port_open(program.workload_port) and port_open(program.tls_port), "left serving"
    assert stop_left_front(program.front_dir, nginx()), "the explicit stop"
    assert not port_open(program.workload_port) and not port_open(program.tls_port)
    assert not program.front_dir.exists()
