"""End to end: the SSH host key lives in TD memory only and the key the SSH server presents is
the registry record's attested `ssh_host_key`; a state file whose owner the host rewrote leads
to refused owner steps, not to a workload under the new "owner"; a registry down at start holds
the lifecycle until it answers. Real tdx-sim, tdx-registry, identity-svc, podman, paramiko."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_report_data import sign_identity_v2, sign_instance_v2
from tests.conftest import Stack
from tests.workload_support import Workload, _cleanup, assert_error, listening, raw_key

pytestmark = pytest.mark.e2e


def record_of(workload: Workload) -> dict[str, Any]:
    response = httpx.get(f"{workload.stack.registry.url}/instance/{workload.instance.hex()}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def presented_host_key(port: int) -> str:
    """The OpenSSH line of the host key the server at `port` presents in its key exchange."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=20)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    return f"{key.get_name()} {key.get_base64()}"


def ed25519_public_keys_in(data: bytes) -> list[bytes]:
    """The public halves of every ed25519 private key `data` holds as PEM or OpenSSH text."""
    found: list[bytes] = []
    for load in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
        try:
            key = load(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if isinstance(key, Ed25519PrivateKey):
            found.append(raw_key(key))
    return found


def assert_no_file_holds_the_host_key(root: Path, host_key_line: str) -> None:
    host_public = base64.b64decode(host_key_line.split()[1])[-32:]
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"PRIVATE KEY" in data:
            assert host_public not in ed25519_public_keys_in(data), f"host key in {path}"


def test_no_ssh_private_key_on_disk_and_the_server_presents_the_attested_key(
    workload: Workload, image: str
) -> None:
    attested_keys: list[str] = []
    for start in range(2):
        if start:
            workload.stack.restart("identity")
        else:
            assert workload.configure(image).status_code == 200
        attested = record_of(workload)["ssh_host_key"]
        assert attested is not None and attested.startswith("ssh-ed25519 ")
        assert presented_host_key(workload.ssh_port) == attested
        served = httpx.get(workload.url + "/workload/ssh-host-key").json()["public_key"]
        assert served == attested, "the unauthenticated convenience route agrees"
        assert not (workload.stack.tmp / "identity" / "ssh_host_ed25519_key").exists()
        assert_no_file_holds_the_host_key(workload.stack.tmp, attested)
        attested_keys.append(attested)
    assert attested_keys[0] != attested_keys[1], "each start makes and measures a new host key"


def rewrite_owner(workload: Workload) -> Ed25519PrivateKey:
    """As the host can while the service is stopped: another owner in the state file, with
    both signatures valid (the instance key lies on the same disk)."""
    attacker = Ed25519PrivateKey.generate()
    pem = (workload.stack.tmp / "identity" / "instance_key.pem").read_bytes()
    instance_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(instance_key, Ed25519PrivateKey)
    signed = sign_instance_v2(attacker, "owner", workload.instance)
    forged = sign_identity_v2(instance_key, "owner", raw_key(attacker), signed)
    state = json.loads(workload.state_file.read_text())
    state["owner"] = forged.to_object()
    state["workload_config"]["owner_pubkey"] = raw_key(attacker).hex()
    workload.state_file.write_text(json.dumps(state))
    return attacker


def container_exists(name: str) -> bool:
    done = subprocess.run(["podman", "container", "exists", name], capture_output=True, check=False)
    return done.returncode == 0


def test_a_rewritten_owner_gets_503_and_no_workload_after_restart(
    workload: Workload, image: str
) -> None:
    assert workload.configure(image).status_code == 200
    assert workload.run("echo kept > /www/index.html")[0] == 0
    identity = workload.stack.identity
    identity.stop()
    _cleanup(workload.container, workload.clear_dir)  # as after a reboot: no container, no mount
    attacker = rewrite_owner(workload)
    log_start = identity.log_path.stat().st_size
    identity.start()

    state = httpx.get(workload.url + "/instance/state").json()
    assert state["state"] == "configured"
    assert state["registry_comparison"]["status"] == "disagreed"
    reason = state["registry_comparison"]["reason"]
    assert "the owner differs" in reason
    assert raw_key(attacker).hex()[:16] in reason and raw_key(workload.owner).hex()[:16] in reason
    for response in (
        workload.signed_post(
            "/workload/configure",
            {
                "instance_pubkey": workload.instance.hex(),
                "image": image,
                "persist_dirs": ["/www"],
                "port": 8080,
            },
            key=attacker,
        ),
        workload.signed_post(
            "/workload/expose", {"instance_pubkey": workload.instance.hex(), "image": image}
        ),
    ):
        assert_error(response, 503, "the owner differs")
        assert int(response.headers["retry-after"]) >= 1
    assert not container_exists(workload.container)
    assert not listening(workload.ssh_port)
    log = identity.log_path.read_bytes()[log_start:].decode(errors="replace")
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [r for r in records if r.get("level") == "ERROR" and "disagree" in r["message"]]
    assert errors and "owner differs" in errors[0]["reason"]
    assert "Traceback" not in log


def test_a_registry_down_at_start_holds_the_lifecycle_until_it_answers(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(identity_env={"REGISTRY_RETRY_INITIAL": "0.2", "REGISTRY_RETRY_MAX": "0.5"})
    stack.registry.stop()
    log_start = stack.identity.log_path.stat().st_size
    stack.restart("identity")
    url = stack.identity.url
    comparison = httpx.get(url + "/instance/state").json()["registry_comparison"]
    assert comparison["status"] == "pending"
    assert comparison["reason"].startswith("the registry has not been reached yet")

    instance = bytes.fromhex(httpx.get(url + "/instance/pubkey").json()["pubkey"])
    operator = Ed25519PrivateKey.generate()
    signature = sign_instance_v2(operator, "operator", instance)
    body = {"pubkey": raw_key(operator).hex(), "signature": signature.hex()}
    refused = httpx.post(url + "/operator/register", json=body, timeout=60)
    assert_error(refused, 503, "the registry has not been reached yet")
    time.sleep(1.0)
    stack.registry.start()
    deadline = time.monotonic() + 30
    while httpx.get(url + "/instance/state").json()["registry_comparison"]["status"] != "agreed":
        assert time.monotonic() < deadline, "the retry never reached the registry"
        time.sleep(0.2)
    served = httpx.post(url + "/operator/register", json=body, timeout=60)
    assert served.status_code == 200, served.text
    log = stack.identity.log_path.read_bytes()[log_start:].decode(errors="replace")
    warnings = [line for line in log.splitlines() if "cannot compare" in line]
    assert len(warnings) >= 2, "logged and retried"
    assert any("agree with the registry" in line for line in log.splitlines())
