"""Run the whole flow on the default ports: sim (3010), registry (3000), identity service (3001),
the owner's key broker (3020), every step through `tdxctl` (each command is printed, then its
output).

keys -> the owner starts its key broker (admin key: the owner's) -> the operator verifies a fresh
attestation and registers -> the owner registers with the token, between two fresh
attestations it verifies (the operator's before, its own after) -> the owner verifies the
registry's record independently -> sets the broker's policy and uploads a store key for the
instance -> configures a workload (the identity service takes the store key from the broker,
against fresh evidence: it is never on a disk), prepares it over SSH with the attested host key
pinned, exposes it -> verifies again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_identity.settings import DEFAULT_FRONT_RUNTIME_PARENT
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_service_kit.testing import LaunchError, Program, installed_program
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists

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
        "KEY_BROKER_URL",
        "KBS_HOST",
        "KBS_PORT",
        "KBS_DB_PATH",
        "KBS_DB_URL",
        "KBS_STORAGE_KEY_PATH",
        "KBS_ADMIN_PUBKEY",
        "KBS_POLICY",
        "KBS_SESSION_TTL",
        "KBS_TOKEN_TTL",
        "KBS_MRTD_ALLOWLIST",
        "KBS_RTMR_ALLOWLIST",
        "KBS_ANY_MEASUREMENT",
        "TDXCTL_KBS_URL",
    }
)
IMAGE = "localhost/tdx-demo-httpd:1"
MRTD = DEFAULT_MR_TD.hex()
"""The TD image everyone here accepts: the simulator's MRTD (and, in the registry, its RTMR0-2)."""
CONTAINER = "tdx-workload"  # identity-svc's default container name
CLEAR_MOUNT = Path("/run/tdx-identity/clear")  # identity-svc's default clear mount point
FRONT_DIR = DEFAULT_FRONT_RUNTIME_PARENT / "front-3001"  # its default front dir (port 3001)


def remove_workload() -> None:
    """Leave no demo container, clear mount or front behind (also from an earlier, interrupted
    run): a stopped identity-svc leaves its serving front (nginx) for its next start."""
    nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
    if nginx is not None:
        stop_left_front(FRONT_DIR, nginx)
    subprocess.run(
        ["podman", "rm", "--force", "--time", "0", CONTAINER],
        capture_output=True,
        check=False,
    )
    with Path("/proc/self/mountinfo").open() as mounts:
        mounted = any(line.split(" ")[4] == str(CLEAR_MOUNT) for line in mounts)
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(CLEAR_MOUNT)], check=False)


def tdxctl(*args: str, env: dict[str, str], capture_json: bool = False) -> dict[str, Any]:
    """Run one tdxctl command as a user would, printing the command line and then its output;
    with `capture_json`, ask for --json and return the object it printed."""
    argv = [bin_path("tdxctl"), *args, *(["--json"] if capture_json else [])]
    print("$ " + shlex.join(["tdxctl", *argv[1:]]), flush=True)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)
    if done.returncode != 0:
        sys.exit(f"demo: tdxctl {args[0]} failed (exit {done.returncode}): {done.stderr.strip()}")
    if not capture_json:
        return {}
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def default_policy() -> Path:
    """The broker's default resource policy, as its package ships it."""
    package = Path(str(resources.files("tdx_kbs")))
    found = sorted(path for path in package.rglob("*.rego") if "default" in path.name)
    if len(found) != 1:
        sys.exit(f"demo: expected one default policy in {package}, found {found}")
    return found[0]


def admin_pubkey(owner_key: Path, into: Path) -> Path:
    """The PEM public key of the owner's key file: the broker's admin key."""
    key = serialization.load_pem_private_key(owner_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        sys.exit(f"demo: {owner_key} is not an ed25519 key")
    into.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return into


def key_broker_flow(env: dict[str, str], instance: str, kbs_url: str, work: Path) -> None:
    """The owner's policy and a new store key for `instance` at the broker."""
    owner_key = str(work / "owner.pem")
    policy = default_policy()
    step(
        f"the owner sets the broker's resource policy: {policy.name}, the default (the store key "
        "of an instance only to that instance, while its attested event log names this owner, "
        "TCB up to date, no debug TD)"
    )
    tdxctl("kbs", "set-policy", "--kbs", kbs_url, "--admin-key", owner_key, str(policy), env=env)
    step("the owner uploads a new random store key for the instance (never printed, never a file)")
    tdxctl(
        "kbs", "put-key", "--kbs", kbs_url, "--admin-key", owner_key, "--instance", instance,
        env=env,
    )  # fmt: skip


def workload_flow(env: dict[str, str], instance: str, owner_pub: str, work: Path) -> None:
    """configure -> SSH in as the owner with the attested host key pinned -> write a page ->
    expose -> page served, SSH closed, and the record verified again."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_image.py"), "--ref", IMAGE],
        check=True,
    )
    step(f"built the local image {IMAGE} (busybox httpd serving /www on 8080)")
    owner_key = str(work / "owner.pem")
    step(
        "the owner configures the workload (signed body, next seq); the identity service attests "
        "to the broker and gets the store key into TD memory only"
    )
    tdxctl(
        "workload", "configure", "--key", owner_key, "--image", IMAGE,
        "--persist-dir", "/www", "--port", "8080", env=env,
    )  # fmt: skip
    step("the owner prepares it over SSH; tdxctl pins the host key attested in RTMR3")
    # As with ssh itself, the words after -- are joined into one remote command line.
    tdxctl(
        "ssh", "--key", owner_key, "--mrtd-allowlist", MRTD, "--",
        "echo 'hello from the owner' > /www/index.html && echo wrote /www/index.html",
        env=env,
    )  # fmt: skip
    step("the owner exposes the workload: SSH setup access closes for good")
    tdxctl("workload", "expose", "--key", owner_key, "--image", IMAGE, env=env)
    page = httpx.get("http://127.0.0.1:8080/index.html", timeout=30).text.strip()
    step(f"http://127.0.0.1:8080/index.html serves {page!r}")
    with socket.socket() as s:
        closed = s.connect_ex(("127.0.0.1", 2222)) != 0
    step(f"SSH setup access closed: {closed}")
    step("anyone can verify the record again: the expose is in the attested log")
    tdxctl(
        "verify", "--instance", instance, "--expect-owner", owner_pub,
        "--mrtd-allowlist", MRTD, env=env,
    )  # fmt: skip
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
    sim_url, registry_url, identity_url, kbs_url = (
        "http://127.0.0.1:3010",
        "http://127.0.0.1:3000",
        "http://127.0.0.1:3001",
        "http://127.0.0.1:3020",
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
                    **td_image_allowlists(DEFAULT_MR_TD),
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
                env
                | {
                    "MOCK_TDX_URL": sim_url,
                    "STORAGE_PATH": str(work / "identity"),
                    "KEY_BROKER_URL": kbs_url,
                },
                identity_url,
                "/instance/pubkey",
                work / "identity.log",
            )
        )

        tenv = env | {
            "TDXCTL_IDENTITY_URL": identity_url,
            "TDXCTL_REGISTRY_URL": registry_url,
            "TDXCTL_TRUSTED_ROOT_CA": str(root_ca),
            "TDXCTL_PCCS_URL": sim_url,
        }
        step(
            "tdxctl takes its defaults from TDXCTL_IDENTITY_URL, TDXCTL_REGISTRY_URL, "
            "TDXCTL_TRUSTED_ROOT_CA (here the simulator's root CA) and TDXCTL_PCCS_URL"
        )
        step(
            f"the registry and every tdxctl check accept one TD image: MRTD {MRTD[:16]}... "
            "(the simulator's; the registry also pins its RTMR0-2)"
        )
        step("the operator and the owner each make a key")
        operator_pub = tdxctl("keygen", str(work / "operator.pem"), env=tenv, capture_json=True)
        owner_pub = tdxctl("keygen", str(work / "owner.pem"), env=tenv, capture_json=True)
        step(
            "the owner runs its key broker, tdx-kbs, with the owner's public key as admin key; "
            "it trusts the simulator's root CA for quotes and releases only to the same TD image "
            "(MRTD and RTMR0-2)"
        )
        allowlists = td_image_allowlists(DEFAULT_MR_TD)
        image_pins = [
            "--mrtd-allowlist",
            allowlists["REGISTRY_MRTD_ALLOWLIST"],
            "--rtmr-allowlist",
            allowlists["REGISTRY_RTMR_ALLOWLIST"],
        ]
        stack.enter_context(
            started(
                "tdx-kbs",
                [
                    bin_path("tdx-kbs"),
                    "--admin-pubkey",
                    str(admin_pubkey(work / "owner.pem", work / "owner.pub.pem")),
                    "--trusted-root-ca",
                    str(root_ca),
                    "--pccs-url",
                    sim_url,
                    "--db-path",
                    str(work / "kbs.db"),
                    "--storage-key-path",
                    str(work / "kbs-storage.key"),
                    *image_pins,
                ],
                env,
                kbs_url,
                "/kbs/v0/auth",
                work / "kbs.log",
            )
        )
        step("the operator verifies a fresh attestation of the instance, then registers")
        registered = tdxctl(
            "operator", "register", "--key", str(work / "operator.pem"), "--mrtd-allowlist", MRTD,
            env=tenv, capture_json=True,
        )  # fmt: skip
        instance = str(registered["attestation"]["instance_pubkey"])
        step(f"the instance key the fresh attestation verified: {instance}")
        step(
            "the owner registers with the operator's single-use token, only for an instance "
            "whose fresh attestation names that operator, then checks a second fresh "
            "attestation names it as owner"
        )
        tdxctl(
            "owner", "register", "--key", str(work / "owner.pem"),
            f"--token={registered['owner_token']}",
            "--expect-operator", str(operator_pub["pubkey"]), "--mrtd-allowlist", MRTD, env=tenv,
        )  # fmt: skip
        step("the owner verifies the registry's record with its own trust root")
        tdxctl(
            "verify", "--instance", instance, "--expect-owner", str(owner_pub["pubkey"]),
            "--mrtd-allowlist", MRTD, env=tenv,
        )  # fmt: skip
        step(
            "the owner audits the registry's Merkle log: the record is its latest leaf, included"
            " under the signed checkpoint (the log key trusted on first use, kept in audit.json)"
        )
        tdxctl("registry", "audit", "--instance", instance, "--state", str(work / "audit.json"),
               env=tenv)  # fmt: skip
        key_broker_flow(tenv, instance, kbs_url, work)
        workload_flow(tenv, instance, str(owner_pub["pubkey"]), work)
        step(
            "a later audit: the record (now with the workload's steps) is still its latest leaf,"
            " and the log is consistent with the checkpoint the first audit kept"
        )
        audited = tdxctl("registry", "audit", "--instance", instance, "--state",
                         str(work / "audit.json"), env=tenv, capture_json=True)  # fmt: skip
        consistent = audited.get("consistent_with_previous") is True
        step(f"the log is consistent with the first audit: {consistent}")
        if not consistent:
            sys.exit("demo: the registry's log is not consistent with the first audit")
        step("done: every program shuts down gracefully now")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
