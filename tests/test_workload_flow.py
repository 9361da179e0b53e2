"""End to end: the owner configures a podman workload on encrypted storage, prepares it over SSH,
exposes it, and nobody gets a shell again. Real identity-svc, registry, sim, podman, gocryptfs,
paramiko and OpenSSH's ssh client; every container and mount is removed afterwards."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.workload_support import (
    CONTAINER_PORT,
    SECRET_TEXT,
    Workload,
    assert_error,
    assert_no_plaintext_under,
    listening,
    write_key,
)

pytestmark = pytest.mark.e2e


def test_owner_prepares_over_ssh_then_expose_serves_the_file_and_closes_ssh(
    workload: Workload, image: str
) -> None:
    r = workload.configure(image)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success"}
    assert workload.state() == "configured"
    assert not listening(workload.workload_port), "no port may be published before expose"

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
        chan.settimeout(5)
        while time.monotonic() < deadline:  # read to EOF: output can trail the exit status
            try:
                chunk = chan.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            seen += chunk
        assert b"index.html" in seen
        assert chan.recv_exit_status() == 0

    assert_no_plaintext_under(workload.stack.tmp / "identity", SECRET_TEXT.encode())

    r = workload.expose(image)
    assert r.status_code == 200, r.text
    assert workload.state() == "exposed"
    served = httpx.get(f"http://127.0.0.1:{workload.workload_port}/index.html", timeout=30)
    assert served.status_code == 200
    assert served.text == SECRET_TEXT
    assert not listening(workload.ssh_port)
    with pytest.raises((OSError, paramiko.SSHException)):
        workload.ssh()
    assert_no_plaintext_under(workload.stack.tmp / "identity", SECRET_TEXT.encode())


def test_only_the_owner_key_opens_ssh(workload: Workload, image: str, tmp_path: Path) -> None:
    assert not listening(workload.ssh_port), "SSH must be closed before configure"
    assert workload.configure(image).status_code == 200
    stranger = write_key(Ed25519PrivateKey.generate(), tmp_path / "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        workload.ssh(key_file=stranger)
    with pytest.raises(paramiko.AuthenticationException):
        workload.ssh(password="hunter2")
    assert workload.run("true")[0] == 0


def test_openssh_client_with_the_attested_host_key_pinned(
    workload: Workload, image: str, tmp_path: Path
) -> None:
    assert workload.configure(image).status_code == 200
    record = httpx.get(f"{workload.stack.registry.url}/instance/{workload.instance.hex()}").json()
    attested = record["ssh_host_key"]
    assert attested.startswith("ssh-ed25519 ")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{workload.ssh_port} {attested}\n")
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
    assert not listening(workload.workload_port)

    assert workload.expose(image).status_code == 200
    workload.stack.restart("identity")
    assert workload.state() == "exposed"
    assert not listening(workload.ssh_port), "SSH must stay closed after a restart"
    served = httpx.get(f"http://127.0.0.1:{workload.workload_port}/index.html", timeout=30)
    assert served.text == "kept\n"
    assert_error(workload.configure(image), 400)


def test_workload_requests_are_checked_before_anything_runs(workload: Workload, image: str) -> None:
    stranger = Ed25519PrivateKey.generate()
    body = {
        "instance_pubkey": workload.instance.hex(),
        "image": image,
        "persist_dirs": ["/www"],
        "port": CONTAINER_PORT,
    }
    assert_error(workload.signed_post("/workload/configure", body, key=stranger), 401)
    assert_error(
        workload.signed_post("/workload/configure", body | {"instance_pubkey": "ab" * 32}), 401
    )
    r = httpx.post(workload.url + "/workload/configure", json=body)  # no x-signature
    assert_error(r, 401)
    for port in (-1, 0, 70000, "80"):
        assert_error(workload.signed_post("/workload/configure", body | {"port": port}), 400)
    for bad_dir in ("relative", "/a/../b", "/a/./b", "/a//b", "/a\x00b", ""):
        r = workload.signed_post("/workload/configure", body | {"persist_dirs": [bad_dir]})
        assert_error(r, 400, "Invalid directory path")
    for bad_image in ("--privileged", "busybox latest", "img\nname", ""):
        assert_error(workload.signed_post("/workload/configure", body | {"image": bad_image}), 400)
    missing = {k: v for k, v in body.items() if k != "persist_dirs"}
    assert_error(workload.signed_post("/workload/configure", missing), 400)
    assert_error(workload.expose(image), 400)  # before configure
    assert workload.state() == "owner_registered"
    assert not listening(workload.ssh_port)

    absent = f"localhost/not-here-{secrets.token_hex(4)}:1"
    assert_error(workload.configure(absent), 400)
    assert workload.state() == "owner_registered"

    assert workload.configure(image).status_code == 200
    assert_error(workload.expose("localhost/another:1"), 401)
    assert workload.expose(image).status_code == 200
    assert_error(workload.expose(image), 400)
    assert_error(workload.configure(image), 400)


def test_replayed_stale_and_misdirected_signed_bodies_change_nothing(
    workload: Workload, image: str
) -> None:
    raw, headers = workload.sign_body(
        "/workload/configure",
        {
            "instance_pubkey": workload.instance.hex(),
            "image": image,
            "persist_dirs": ["/www"],
            "port": CONTAINER_PORT,
        },
    )
    assert workload.post_raw("/workload/configure", raw, headers).status_code == 200
    assert workload.last_seq() == 1
    before = workload.state_file.read_bytes()
    # The same bytes and signature again: a replay.
    assert_error(workload.post_raw("/workload/configure", raw, headers), 401, "stale request")
    # The captured configure body posted to expose would have closed SSH for good.
    assert_error(workload.post_raw("/workload/expose", raw, headers), 400)
    body = {"instance_pubkey": workload.instance.hex(), "image": image, "seq": 1}
    assert_error(workload.signed_post("/workload/expose", body), 401, "stale request")
    no_seq = json.dumps(
        {"action": "expose", "instance_pubkey": workload.instance.hex(), "image": image}
    ).encode()
    r = workload.post_raw(
        "/workload/expose", no_seq, {"x-signature": workload.owner.sign(no_seq).hex()}
    )
    assert_error(r, 400, "missing field: seq")
    assert workload.state_file.read_bytes() == before
    assert workload.state() == "configured"
    assert listening(workload.ssh_port)
    assert workload.expose(image).status_code == 200
    assert workload.last_seq() == 2
