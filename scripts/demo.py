"""Run the whole flow on the default ports: sim (3010), registry (3000), identity service (3001).

operator registers -> owner registers with the token -> the registry record is fetched and its
quote re-verified with the verify-quote command against the sim root -> the owner configures
a workload, prepares it over SSH and exposes it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_service_kit.testing import LaunchError, Program, installed_program

ROOT = Path(__file__).resolve().parent.parent


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def bin_path(name: str) -> str:
    try:
        return installed_program(name)
    except LaunchError:
        sys.exit(f"demo: {name} is not installed (run ./scripts/setup, then ./scripts/demo)")


@contextlib.contextmanager
def started(
    name: str, argv: list[str], env: dict[str, str], base_url: str, ready_path: str, log: Path
) -> Iterator[Program]:
    """Run one program for the demo (output to `log`) once `base_url + ready_path` answers."""
    log.unlink(missing_ok=True)
    program = Program(name, argv, env, base_url, ready_path, log)
    try:
        program.start(poll=0.2)
    except LaunchError as exc:
        sys.exit(f"demo: {name} did not start: {exc}")
    step(f"{name} is up ({base_url.split('/')[2]}), log in {log}")
    try:
        yield program
    finally:
        with contextlib.suppress(LaunchError):
            program.stop()


DEFAULTED_SETTINGS = frozenset(
    {
        "STORAGE_PATH",
        "MOCK_TDX_URL",
        "REGISTRY_URL",
        "REGISTRY_DB_PATH",
        "REGISTRY_DB_URL",
        "SKIP_TDX_AUTH",
        "PCCS_URL",
        "TDX_TRUSTED_ROOT_CA",
        "SSH_LISTEN",
        "SSH_PORT",
        "WORKLOAD_PORT",
        "WORKLOAD_PUBLISH_HOST",
        "CLEAR_MOUNT_DIR",
        "CONTAINER_NAME",
        "RTMR_SYSFS_PATH",
        "STORE_KEY_PATH",
    }
)
IMAGE = "localhost/tdx-demo-httpd:1"
CONTAINER = "tdx-workload"  # identity-svc's default container name
CLEAR_MOUNT = Path("/run/tdx-identity/clear")  # identity-svc's default clear mount point


def remove_workload() -> None:
    """Leave no demo container or clear mount behind (also from an earlier, interrupted run)."""
    subprocess.run(
        ["podman", "rm", "--force", "--time", "0", CONTAINER],
        capture_output=True,
        check=False,
    )
    with Path("/proc/self/mountinfo").open() as mounts:
        mounted = any(line.split(" ")[4] == str(CLEAR_MOUNT) for line in mounts)
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(CLEAR_MOUNT)], check=False)


def signed(identity_url: str, route: str, key: Ed25519PrivateKey, body: dict[str, object]) -> int:
    """POST the owner's signed body naming its action (the route) and the next seq after the
    instance's last accepted one; return that seq."""
    seq = int(httpx.get(identity_url + "/instance/state").json()["last_seq"]) + 1
    raw = json.dumps({"action": route.rsplit("/", 1)[-1], "seq": seq} | body).encode()
    url = identity_url + route
    r = httpx.post(url, content=raw, headers={"x-signature": key.sign(raw).hex()}, timeout=120)
    if r.status_code != 200:
        sys.exit(f"demo: {url} answered {r.status_code}: {r.text}")
    return seq


def ssh_run(key_file: Path, command: str) -> str:
    done = subprocess.run(
        [
            "ssh",
            "-p",
            "2222",
            "-i",
            str(key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={key_file.parent / 'known_hosts'}",
            "owner@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"demo: ssh failed ({done.returncode}): {done.stderr}")
    return done.stdout


def workload_flow(identity_url: str, instance: bytes, owner: Ed25519PrivateKey, work: Path) -> None:
    """configure -> SSH in as the owner -> write a page -> expose -> page served, SSH closed."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_image.py"), "--ref", IMAGE],
        check=True,
    )
    step(f"built the local image {IMAGE} (busybox httpd serving /www on 8080)")
    seq = signed(
        identity_url,
        "/workload/configure",
        owner,
        {"instance_pubkey": instance.hex(), "image": IMAGE, "persist_dirs": ["/www"], "port": 8080},
    )
    step(
        f"workload configured (seq {seq}): container running on encrypted storage, SSH open on 2222"
    )
    key_file = work / "owner_ed25519"
    key_file.write_bytes(
        owner.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    host_key = httpx.get(identity_url + "/workload/ssh-host-key").json()
    (work / "known_hosts").write_text(f"[127.0.0.1]:2222 {host_key['public_key']}\n")
    step(f"pinned the SSH host key {host_key['fingerprint']}")
    ssh_run(key_file, "echo 'hello from the owner' > /www/index.html")
    step("owner wrote /www/index.html over SSH")
    seq = signed(
        identity_url,
        "/workload/expose",
        owner,
        {"instance_pubkey": instance.hex(), "image": IMAGE},
    )
    page = httpx.get("http://127.0.0.1:8080/index.html", timeout=30).text.strip()
    step(f"exposed (seq {seq}): http://127.0.0.1:8080/index.html serves {page!r}")
    with socket.socket() as s:
        closed = s.connect_ex(("127.0.0.1", 2222)) != 0
    step(f"SSH setup access closed for good: {closed}")
    if not closed or page != "hello from the owner":
        sys.exit("demo: the exposed workload is not as the owner left it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # The embedded defaults, whatever this shell's environment says.
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTED_SETTINGS}
    sim_url, registry_url, identity_url = (
        "http://127.0.0.1:3010",
        "http://127.0.0.1:3000",
        "http://127.0.0.1:3001",
    )
    remove_workload()
    with contextlib.ExitStack() as stack:
        stack.callback(remove_workload)
        stack.enter_context(
            started(
                "tdx-sim",
                [bin_path("tdx-sim"), "--state-dir", str(work / "sim")],
                env,
                sim_url,
                "/root_ca.pem",
                work / "sim.log",
            )
        )
        root_ca = work / "sim" / "root_ca.pem"
        stack.enter_context(
            started(
                "tdx-registry",
                [bin_path("tdx-registry")],
                env
                | {
                    "PCCS_URL": sim_url,
                    "TDX_TRUSTED_ROOT_CA": str(root_ca),
                    "REGISTRY_DB_PATH": str(work / "registry.db"),
                },
                registry_url,
                "/instance/" + "00" * 32,
                work / "registry.log",
            )
        )
        stack.enter_context(
            started(
                "identity-svc",
                [bin_path("identity-svc")],
                env | {"MOCK_TDX_URL": sim_url, "STORAGE_PATH": str(work / "identity")},
                identity_url,
                "/instance/pubkey",
                work / "identity.log",
            )
        )

        instance = bytes.fromhex(httpx.get(identity_url + "/instance/pubkey").json()["pubkey"])
        step(f"instance public key {instance.hex()}")

        operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        r = httpx.post(
            identity_url + "/operator/register",
            timeout=30,
            json={
                "pubkey": operator.public_key().public_bytes_raw().hex(),
                "signature": operator.sign(instance).hex(),
            },
        )
        r.raise_for_status()
        token = r.json()["owner_token"]
        step("operator registered; the registry verified the quote and recorded it")

        r = httpx.post(
            identity_url + "/owner/register",
            timeout=30,
            headers={"x-token": token},
            json={
                "pubkey": owner.public_key().public_bytes_raw().hex(),
                "signature": owner.sign(instance).hex(),
            },
        )
        r.raise_for_status()
        step("owner registered with the single-use token")

        record = httpx.get(f"{registry_url}/instance/{instance.hex()}").json()
        step(
            f"registry record: TCB {record['verification']['tcb_status']}, "
            f"operator {record['operator']['pubkey'][:16]}..., "
            f"owner {record['owner']['pubkey'][:16]}..."
        )

        quote_file = work / "registered-quote.bin"
        quote_file.write_bytes(base64.b64decode(record["attestation_quote"]))
        out = subprocess.run(
            [
                bin_path("verify-quote"),
                "--quote",
                str(quote_file),
                "--pccs-url",
                sim_url,
                "--root-ca",
                str(root_ca),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        verdict = json.loads(out.stdout)
        step(
            f"verify-quote on the recorded quote: valid={verdict['valid']} "
            f"tcb_status={verdict['tcb_status']} ppid={verdict['ppid']}"
        )
        if not verdict["valid"]:
            return 1
        workload_flow(identity_url, instance, owner, work)
        step("done: every program shuts down gracefully now")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
