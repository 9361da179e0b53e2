"""End to end from `tdxctl` alone: keys, operator and owner registration, independent
verification of the registry's record, the owner's signed workload steps, SSH with the
attested host key, and the exposed workload answering. Real tdx-sim, registry, identity
service, podman, gocryptfs and OpenSSH; every container and mount is removed afterwards."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.procs import free_port, program
from tests.workload_support import CONTAINER_PORT, _cleanup, listening

pytestmark = pytest.mark.e2e


@dataclass
class Cli:
    """`tdxctl` as installed, with the TDXCTL_* defaults of one stack."""

    env: dict[str, str]
    tmp: Path

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
class Td:
    stack: Stack
    cli: Cli
    ssh_port: int
    workload_port: int
    tls_port: int = 0

    @property
    def identity(self) -> str:
        return self.stack.identity.url

    def state(self) -> str:
        return str(httpx.get(self.identity + "/instance/state").json()["state"])

    def instance(self) -> str:
        return str(httpx.get(self.identity + "/instance/pubkey").json()["pubkey"])


@pytest.fixture
def td(make_stack: Callable[..., Stack], tmp_path: Path) -> Iterator[Td]:
    """A fresh instance whose identity service runs the real workload manager, and `tdxctl`
    configured for it through the TDXCTL_* variables."""
    container = f"tdx-e2e-{secrets.token_hex(4)}"
    clear_dir = tmp_path / "run" / "clear"
    ssh_port, workload_port, tls_port = free_port(), free_port(), free_port()
    try:
        stack = make_stack(
            identity_env={
                "SSH_LISTEN": "127.0.0.1",
                "SSH_PORT": str(ssh_port),
                "WORKLOAD_PORT": str(workload_port),
                "WORKLOAD_TLS_PORT": str(tls_port),
                "WORKLOAD_INTERNAL_PORT": str(free_port()),
                "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
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
        yield Td(stack, Cli(env, tmp_path), ssh_port, workload_port, tls_port)
    finally:
        _cleanup(container, clear_dir)


def test_the_whole_flow_from_tdxctl_alone(td: Td, image: str, tmp_path: Path) -> None:
    cli = td.cli
    operator_key, owner_key = tmp_path / "operator.pem", tmp_path / "owner.pem"
    operator = cli.json("keygen", str(operator_key))["pubkey"]
    owner = cli.json("keygen", str(owner_key))["pubkey"]
    instance = td.instance()

    # The operator signs nothing for an instance whose attestation does not verify under its
    # own trust: here Intel's root, which does not sign the sim's PCK.
    refused = cli(
        "operator", "register", "--key", str(operator_key), "--trusted-root-ca", "/dev/null"
    )
    assert refused.returncode == 2, refused.stderr  # not a PEM certificate: a usage error
    intel_root = dict(cli.env)
    del intel_root["TDXCTL_TRUSTED_ROOT_CA"]
    refused = subprocess.run(
        [program("tdxctl"), "operator", "register", "--key", str(operator_key), "--json"],
        env=intel_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    assert json.loads(refused.stdout)["check"] == "quote"
    assert td.state() == "fresh"

    registered = cli.json("operator", "register", "--key", str(operator_key))
    assert registered["attestation"]["instance_pubkey"] == instance
    assert registered["attestation"]["tcb_status"] == "UpToDate"
    token = registered["owner_token"]
    # The owner sends its token only to an instance attested under the expected operator...
    stranger = cli.json("keygen", str(tmp_path / "stranger.pem"))["pubkey"]
    wrong_operator = cli.json(
        "owner", "register", "--key", str(owner_key), f"--token={token}",
        "--expect-operator", stranger, status=1,
    )  # fmt: skip
    assert wrong_operator["check"] == "expectation"
    assert td.state() == "operator_registered"
    # ...and succeeds when a fresh attestation after the registration names it as owner.
    owned = cli.json(
        "owner", "register", "--key", str(owner_key), f"--token={token}",
        "--expect-operator", operator,
    )  # fmt: skip
    assert (owned["status"], owned["instance_pubkey"], owned["owner"]) == (
        "success",
        instance,
        owner,
    )
    assert (owned["attestation"]["operator"], owned["attestation"]["owner"]) == (operator, owner)
    assert owned["attestation"]["instance_pubkey"] == instance

    facts = cli.json(
        "verify", "--instance", instance, "--expect-operator", operator, "--expect-owner", owner
    )
    assert (facts["operator"], facts["owner"]) == (operator, owner)
    assert facts["tcb_status"] == "UpToDate"
    assert {h["role"] for h in facts["helpers"]} >= {"podman"}
    assert facts["workload_events"] == []
    text = cli("verify", "--instance", instance, "--expect-owner", owner)
    assert text.returncode == 0, text.stderr
    assert f"owner          {owner}" in text.stdout
    assert "tcb_status     UpToDate" in text.stdout
    failure = cli.json("verify", "--instance", instance, "--expect-owner", operator, status=1)
    assert failure["check"] == "expectation"

    configured = cli.json(
        "workload", "configure", "--key", str(owner_key), "--image", image,
        "--persist-dir", "/www", "--port", str(CONTAINER_PORT),
    )  # fmt: skip
    assert configured == {"status": "success", "seq": 1}
    assert td.state() == "configured"

    secret = "tdxctl-secret-" + secrets.token_hex(8)
    ssh = ["ssh", "--key", str(owner_key), "--ssh-port", str(td.ssh_port)]
    done = cli(*ssh, "--", f"echo {secret} > /www/index.html; cat /www/index.html; exit 5")
    assert done.returncode == 5, done.stderr
    assert done.stdout == secret + "\n"
    pinned = done.stderr.split("pinned the attested host key ", 1)[1].splitlines()[0]
    assert pinned.startswith("ssh-ed25519 ")
    # The operator's key is not the owner's: tdxctl refuses before any SSH connection.
    stranger = cli("ssh", "--key", str(operator_key), "--ssh-port", str(td.ssh_port), "--", "true")
    assert stranger.returncode == 1
    assert "verification failed (expectation)" in stranger.stderr

    exposed = cli.json("workload", "expose", "--key", str(owner_key), "--image", image)
    assert exposed == {"status": "success", "seq": 2}
    assert td.state() == "exposed"

    facts = cli.json("verify", "--instance", instance, "--expect-owner", owner)
    assert [e["transition"] for e in facts["workload_events"]] == ["configure", "expose"]
    assert facts["workload_events"][-1]["image"] == image
    assert facts["workload_events"][-1]["persist_dirs"] == ["/www"]
    assert facts["ssh_host_key"] == pinned
    record = httpx.get(f"{td.stack.registry.url}/instance/{instance}").json()
    assert record["ssh_host_key"] == pinned

    served = httpx.get(f"http://127.0.0.1:{td.workload_port}/index.html", timeout=30)
    assert served.status_code == 200
    assert served.text == secret + "\n"
    assert served.headers["x-instance-pubkey"] == instance, "through the front"
    # The TLS port: tdxctl verifies the front's attested certificate before it sends the GET.
    got = cli.json("get", f"https://127.0.0.1:{td.tls_port}/index.html", "--expect-owner", owner)
    assert (got["status"], got["body"]) == (200, secret + "\n")
    assert got["instance_pubkey"] == instance
    assert ["x-instance-pubkey", instance] in got["headers"]
    assert not listening(td.ssh_port)
    after = cli(*ssh, "--", "true", timeout=120)
    assert after.returncode == 255, after.stderr  # nothing listens on the SSH port any more
