"""Fixtures for the end-to-end workload tests: a locally built image and a registered instance
whose identity service runs the real workload manager (podman, gocryptfs, SSH) on free ports.
Registered as a pytest plugin by tests/conftest.py; every container and mount is removed."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_report_data import sign_instance_v2
from tests.conftest import Stack
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_PORT = 8080  # busybox httpd in the test image
SECRET_TEXT = "owner-secret-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    ref = f"localhost/tdx-e2e-httpd-{secrets.token_hex(4)}:1"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_image.py"), "--ref", ref], check=True
    )
    yield ref
    subprocess.run(["podman", "rmi", "--force", ref], capture_output=True, check=False)


def raw_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@dataclass
class Workload:
    stack: Stack
    instance: bytes
    owner: Ed25519PrivateKey
    owner_key_file: Path
    ssh_port: int
    workload_port: int
    container: str
    clear_dir: Path
    tls_port: int = 0
    """The front's TLS port (the attested certificate)."""
    internal_port: int = 0
    """The container's port, published on 127.0.0.1 only."""

    @property
    def url(self) -> str:
        return self.stack.identity.url

    def last_seq(self) -> int:
        return int(httpx.get(self.url + "/instance/state").json()["last_seq"])

    def sign_body(
        self, route: str, body: dict[str, Any], key: Ed25519PrivateKey | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The raw body and its `x-signature` header; `action` (the route's last segment) and
        `seq` (the instance's last accepted one plus 1) unless the body names its own."""
        sequenced = {"action": route.rsplit("/", 1)[-1], "seq": self.last_seq() + 1} | body
        raw = json.dumps(sequenced).encode()
        return raw, {"x-signature": (key or self.owner).sign(raw).hex()}

    def post_raw(self, route: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.url + route, content=raw, headers=headers, timeout=120)

    def signed_post(
        self, route: str, body: dict[str, Any], key: Ed25519PrivateKey | None = None
    ) -> httpx.Response:
        return self.post_raw(route, *self.sign_body(route, body, key))

    def configure(self, image: str, dirs: list[str] | None = None) -> httpx.Response:
        return self.signed_post(
            "/workload/configure",
            {
                "instance_pubkey": self.instance.hex(),
                "image": image,
                "persist_dirs": dirs if dirs is not None else ["/www"],
                "port": CONTAINER_PORT,
            },
        )

    def expose(self, image: str) -> httpx.Response:
        return self.signed_post(
            "/workload/expose", {"instance_pubkey": self.instance.hex(), "image": image}
        )

    @property
    def state_file(self) -> Path:
        return self.stack.tmp / "identity" / "identity_state.json"

    def state(self) -> str:
        return str(httpx.get(self.url + "/instance/state").json()["state"]).lower()

    def ssh(self, key_file: Path | None = None, password: str | None = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            "127.0.0.1",
            port=self.ssh_port,
            username="anyone",
            key_filename=str(key_file or self.owner_key_file) if password is None else None,
            password=password,
            look_for_keys=False,
            allow_agent=False,
            timeout=20,
            auth_timeout=20,
        )
        return client

    def run(self, command: str, stdin: bytes | None = None) -> tuple[int, bytes]:
        with contextlib.closing(self.ssh()) as client:
            chan_in, chan_out, _ = client.exec_command(command, timeout=60)
            if stdin is not None:
                chan_in.write(stdin)
            chan_in.channel.shutdown_write()
            out = chan_out.read()
            return chan_out.channel.recv_exit_status(), out


def write_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def listening(port: int) -> bool:
    """Whether something listens on loopback `port`. The test ports come from the ephemeral
    range, where a connect to a port nobody listens on can, rarely, pick that same port as
    its source and connect to itself (TCP simultaneous open): that is not a listener."""
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) != 0:
            return False
        return bool(s.getsockname() != s.getpeername())


def _cleanup(container: str, clear_dir: Path) -> None:
    subprocess.run(
        ["podman", "rm", "--force", "--time", "0", container],
        capture_output=True,
        check=False,
    )
    with Path("/proc/self/mountinfo").open() as f:
        mounted = any(line.split(" ")[4] == str(clear_dir) for line in f)
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(clear_dir)], check=False)


@pytest.fixture
def workload(make_stack: Callable[..., Stack], tmp_path: Path) -> Iterator[Workload]:
    """A registered instance (operator and owner) whose identity service runs the workload."""
    container = f"tdx-e2e-{secrets.token_hex(4)}"
    clear_dir = tmp_path / "run" / "clear"
    ssh_port, workload_port = free_port(), free_port()
    tls_port, internal_port = free_port(), free_port()
    try:
        stack = make_stack(
            identity_env={
                "SSH_LISTEN": "127.0.0.1",
                "SSH_PORT": str(ssh_port),
                "WORKLOAD_PORT": str(workload_port),
                "WORKLOAD_TLS_PORT": str(tls_port),
                "WORKLOAD_INTERNAL_PORT": str(internal_port),
                "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
                "CLEAR_MOUNT_DIR": str(clear_dir),
                "STORE_KEY_PATH": str(tmp_path / "td-root" / "store.key"),
                "CONTAINER_NAME": container,
            }
        )
        instance = bytes.fromhex(
            httpx.get(stack.identity.url + "/instance/pubkey").json()["pubkey"]
        )
        operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        r = httpx.post(
            stack.identity.url + "/operator/register",
            json={
                "pubkey": raw_key(operator).hex(),
                "signature": sign_instance_v2(operator, "operator", instance).hex(),
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        r = httpx.post(
            stack.identity.url + "/owner/register",
            json={
                "pubkey": raw_key(owner).hex(),
                "signature": sign_instance_v2(owner, "owner", instance).hex(),
            },
            headers={"x-token": r.json()["owner_token"]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield Workload(
            stack,
            instance,
            owner,
            write_key(owner, tmp_path / "owner_ed25519"),
            ssh_port,
            workload_port,
            container,
            clear_dir,
            tls_port,
            internal_port,
        )
    finally:
        _cleanup(container, clear_dir)


def assert_error(r: httpx.Response, status: int, words: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    reason = r.json()["error"]
    assert isinstance(reason, str) and reason
    if words is not None:
        assert words in reason, reason


def assert_no_plaintext_under(storage: Path, needle: bytes) -> None:
    for path in storage.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), f"plaintext found in {path}"
            assert needle.decode() not in path.name
