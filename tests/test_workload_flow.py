"""End to end: the owner configures a podman workload on encrypted storage, prepares it over SSH,
exposes it, and nobody gets a shell again. Real identity-svc, registry, sim, podman, gocryptfs,
paramiko and OpenSSH's ssh client; every container and mount is removed afterwards."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import Stack
from tests.procs import free_port

pytestmark = pytest.mark.e2e

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


def _raw(key: Ed25519PrivateKey) -> bytes:
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

    @property
    def url(self) -> str:
        return self.stack.identity.url

    def signed_post(
        self, route: str, body: dict[str, Any], key: Ed25519PrivateKey | None = None
    ) -> httpx.Response:
        raw = json.dumps(body).encode()
        signature = (key or self.owner).sign(raw).hex()
        return httpx.post(
            self.url + route, content=raw, headers={"x-signature": signature}, timeout=120
        )

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


def _write_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


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
    try:
        stack = make_stack(
            identity_env={
                "SSH_LISTEN": "127.0.0.1",
                "SSH_PORT": str(ssh_port),
                "WORKLOAD_PORT": str(workload_port),
                "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
                "CLEAR_MOUNT_DIR": str(clear_dir),
                "CONTAINER_NAME": container,
            }
        )
        instance = bytes.fromhex(
            httpx.get(stack.identity.url + "/instance/pubkey").json()["pubkey"]
        )
        operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        r = httpx.post(
            stack.identity.url + "/operator/register",
            json={"pubkey": _raw(operator).hex(), "signature": operator.sign(instance).hex()},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        r = httpx.post(
            stack.identity.url + "/owner/register",
            json={"pubkey": _raw(owner).hex(), "signature": owner.sign(instance).hex()},
            headers={"x-token": r.json()["owner_token"]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield Workload(
            stack,
            instance,
            owner,
            _write_key(owner, tmp_path / "owner_ed25519"),
            ssh_port,
            workload_port,
            container,
            clear_dir,
        )
    finally:
        _cleanup(container, clear_dir)


def _assert_error(r: httpx.Response, status: int, words: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    reason = r.json()["error"]
    assert isinstance(reason, str) and reason
    if words is not None:
        assert words in reason, reason


def _no_plaintext_under(storage: Path, needle: bytes) -> None:
    for path in storage.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), f"plaintext found in {path}"
            assert needle.decode() not in path.name


def test_owner_prepares_over_ssh_then_expose_serves_the_file_and_closes_ssh(
    workload: Workload, image: str
) -> None:
    r = workload.configure(image)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success"}
    assert workload.state() == "configured"
    assert not _listening(workload.workload_port), "no port may be published before expose"

    status, _ = workload.run("cat > /www/index.html", stdin=SECRET_TEXT.encode())
    assert status == 0
    status, out = workload.run("cat /www/index.html; exit 3")
    assert (status, out) == (3, SECRET_TEXT.encode())

    # A pty shell sees the same container.
    with contextlib.closing(workload.ssh()) as client:
        chan = client.invoke_shell(width=100, height=30)
        chan.send(b"ls /www; exit 0\n")
        seen = b""
        deadline = time.monotonic() + 30
        while not chan.exit_status_ready() and time.monotonic() < deadline:
            if chan.recv_ready():
                seen += chan.recv(4096)
            time.sleep(0.05)
        assert b"index.html" in seen

    _no_plaintext_under(workload.stack.tmp / "identity", SECRET_TEXT.encode())

    r = workload.expose(image)
    assert r.status_code == 200, r.text
    assert workload.state() == "exposed"
    served = httpx.get(f"http://127.0.0.1:{workload.workload_port}/index.html", timeout=30)
    assert served.status_code == 200
    assert served.text == SECRET_TEXT
    assert not _listening(workload.ssh_port)
    with pytest.raises((OSError, paramiko.SSHException)):
        workload.ssh()
    _no_plaintext_under(workload.stack.tmp / "identity", SECRET_TEXT.encode())


def test_only_the_owner_key_opens_ssh(workload: Workload, image: str, tmp_path: Path) -> None:
    assert not _listening(workload.ssh_port), "SSH must be closed before configure"
    assert workload.configure(image).status_code == 200
    stranger = _write_key(Ed25519PrivateKey.generate(), tmp_path / "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        workload.ssh(key_file=stranger)
    with pytest.raises(paramiko.AuthenticationException):
        workload.ssh(password="hunter2")
    assert workload.run("true")[0] == 0


def test_openssh_client_with_the_pinned_host_key(
    workload: Workload, image: str, tmp_path: Path
) -> None:
    assert workload.configure(image).status_code == 200
    host_key = httpx.get(workload.url + "/workload/ssh-host-key").json()
    assert host_key["public_key"].startswith("ssh-ed25519 ")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{workload.ssh_port} {host_key['public_key']}\n")
    done = subprocess.run(
        [
            "ssh",
            "-p",
            str(workload.ssh_port),
            "-i",
            str(workload.owner_key_file),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "owner@127.0.0.1",
            "echo from-openssh > /www/o.txt; cat /www/o.txt; exit 7",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"from-openssh\n"


def test_restart_before_and_after_expose_recovers_the_committed_step(
    workload: Workload, image: str
) -> None:
    assert workload.configure(image).status_code == 200
    assert workload.run("echo kept > /www/index.html")[0] == 0

    workload.stack.restart("identity")
    assert workload.state() == "configured"
    assert workload.run("cat /www/index.html") == (0, b"kept\n")
    assert not _listening(workload.workload_port)

    assert workload.expose(image).status_code == 200
    workload.stack.restart("identity")
    assert workload.state() == "exposed"
    assert not _listening(workload.ssh_port), "SSH must stay closed after a restart"
    served = httpx.get(f"http://127.0.0.1:{workload.workload_port}/index.html", timeout=30)
    assert served.text == "kept\n"
    _assert_error(workload.configure(image), 400)


def test_workload_requests_are_checked_before_anything_runs(workload: Workload, image: str) -> None:
    stranger = Ed25519PrivateKey.generate()
    body = {
        "instance_pubkey": workload.instance.hex(),
        "image": image,
        "persist_dirs": ["/www"],
        "port": CONTAINER_PORT,
    }
    _assert_error(workload.signed_post("/workload/configure", body, key=stranger), 401)
    _assert_error(
        workload.signed_post("/workload/configure", body | {"instance_pubkey": "ab" * 32}), 401
    )
    r = httpx.post(workload.url + "/workload/configure", json=body)  # no x-signature
    _assert_error(r, 401)
    for port in (-1, 0, 70000, "80"):
        _assert_error(workload.signed_post("/workload/configure", body | {"port": port}), 400)
    for bad_dir in ("relative", "/a/../b", "/a/./b", "/a//b", "/a\x00b", ""):
        r = workload.signed_post("/workload/configure", body | {"persist_dirs": [bad_dir]})
        _assert_error(r, 400, "Invalid directory path")
    for bad_image in ("--privileged", "busybox latest", "img\nname", ""):
        _assert_error(workload.signed_post("/workload/configure", body | {"image": bad_image}), 400)
    missing = {k: v for k, v in body.items() if k != "persist_dirs"}
    _assert_error(workload.signed_post("/workload/configure", missing), 400)
    _assert_error(workload.expose(image), 400)  # before configure
    assert workload.state() == "owner_registered"
    assert not _listening(workload.ssh_port)

    absent = f"localhost/not-here-{secrets.token_hex(4)}:1"
    _assert_error(workload.configure(absent), 400)
    assert workload.state() == "owner_registered"

    assert workload.configure(image).status_code == 200
    _assert_error(workload.expose("localhost/another:1"), 401)
    assert workload.expose(image).status_code == 200
    _assert_error(workload.expose(image), 400)
    _assert_error(workload.configure(image), 400)
