"""Run the whole flow on the default ports: sim (3010), registry (3000), identity service (3001).

operator registers -> owner registers with the token -> the registry record is fetched and its
quote re-verified with the verify-quote command against the sim root.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def bin_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        sys.exit(f"demo: {name} is not installed (run ./scripts/setup, then ./scripts/demo)")
    return found


@contextlib.contextmanager
def started(
    name: str, argv: list[str], env: dict[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                sys.exit(f"demo: {name} exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"demo: {name} did not start; see {log}")
            time.sleep(0.2)
        step(f"{name} is up ({ready_url.split('/')[2]}), log in {log}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ)
    sim_url, registry_url, identity_url = (
        "http://127.0.0.1:3010",
        "http://127.0.0.1:3000",
        "http://127.0.0.1:3001",
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            started(
                "tdx-sim",
                [bin_path("tdx-sim"), "--state-dir", str(work / "sim")],
                env,
                sim_url + "/root_ca.pem",
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
                registry_url + "/instance/" + "00" * 32,
                work / "registry.log",
            )
        )
        stack.enter_context(
            started(
                "identity-svc",
                [bin_path("identity-svc")],
                env | {"MOCK_TDX_URL": sim_url, "STORAGE_PATH": str(work / "identity")},
                identity_url + "/instance/pubkey",
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
        out = subprocess.run(  # noqa: S603
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
        step("done: every program shuts down gracefully now")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
