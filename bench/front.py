"""Benchmark of the attested-TLS issue: the identity service's front (nginx) against the
container it proxies, side by side in one run on one stack.

Requests per second measured by wrk (keep-alive, `--connections` connections, one thread) of a
GET of one small file (`--body-bytes`, written into the container's /www), 8 connections by
default (see --connections):

1. plain HTTP straight to the container's port (127.0.0.1:WORKLOAD_INTERNAL_PORT): the baseline;
2. plain HTTP through the front (WORKLOAD_PORT), which adds x-instance-pubkey (target >= 0.8x);
3. HTTPS through the front (WORKLOAD_TLS_PORT, the attested certificate; target >= 0.5x).

The container's server is the one the workload tests and bench/workload.py run: busybox httpd
from scripts/make_image.py, which closes the connection after each answer (HTTP/1.0), so wrk
reconnects to it for every request of the baseline while its connections to the front stay
open (nginx keeps up to 32 idle connections to the container, which busybox closes anyway).
Each figure is the median of `--rounds` runs, the three interleaved.

Run by hand as root after ./scripts/setup: `hatch run bench:front`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port, program, started
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_report_data import sign_instance_v2
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_PORT = 8080  # busybox httpd in scripts/make_image.py's image
TARGETS = {"HTTP through the front": 0.8, "HTTPS through the front": 0.5}


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit("bench: condition not reached in time")
        time.sleep(0.02)


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1, verify=False).is_success
        except httpx.HTTPError:
            return False

    return check


def wrk_rate(url: str, seconds: float, connections: int) -> float:
    """Requests per second of GET `url` by wrk; any non-2xx answer or socket error fails
    the benchmark (throughput of errors is not throughput)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("bench: wrk is not installed (./scripts/setup installs it)")
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"bench: errors under load at {url}:\n{out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    sys.exit(f"bench: could not read wrk's output:\n{out}")


def signed(url: str, key: Ed25519PrivateKey, seq: int, body: dict[str, object]) -> None:
    """POST the owner's signed body naming its action (the route's last segment) and `seq`."""
    raw = json.dumps({"action": url.rsplit("/", 1)[-1], "seq": seq} | body).encode()
    r = httpx.post(url, content=raw, headers={"x-signature": key.sign(raw).hex()}, timeout=120)
    if not r.is_success:
        sys.exit(f"bench: {url} answered {r.status_code}: {r.text}")


def register(id_url: str) -> tuple[bytes, Ed25519PrivateKey]:
    """Register an operator and an owner; the instance key and the owner's key."""
    instance = bytes.fromhex(httpx.get(id_url + "/instance/pubkey").json()["pubkey"])
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    token = httpx.post(
        id_url + "/operator/register",
        timeout=60,
        json={
            "pubkey": operator.public_key().public_bytes_raw().hex(),
            "signature": sign_instance_v2(operator, "operator", instance).hex(),
        },
    ).json()["owner_token"]
    httpx.post(
        id_url + "/owner/register",
        timeout=60,
        headers={"x-token": token},
        json={
            "pubkey": owner.public_key().public_bytes_raw().hex(),
            "signature": sign_instance_v2(owner, "owner", instance).hex(),
        },
    ).raise_for_status()
    return instance, owner


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, median taken")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="wrk connections (busybox httpd listens with a backlog of 9: more connections, "
        "each reconnecting per request, overflow it and wrk times out on the baseline)",
    )
    parser.add_argument("--body-bytes", type=int, default=1024, help="size of the served file")
    args = parser.parse_args()
    if args.seconds < 1 or args.rounds < 1 or args.connections < 1 or args.body_bytes < 0:
        parser.error("--seconds, --rounds and --connections are at least 1, --body-bytes >= 0")
    tmp = Path(tempfile.mkdtemp(prefix="tdx-bench-front-"))
    shm = Path("/dev/shm") / f"tdx-bench-front-{secrets.token_hex(4)}"
    image = f"localhost/tdx-bench-httpd-{secrets.token_hex(4)}:1"
    container = f"tdx-bench-{secrets.token_hex(4)}"
    clear_dir = tmp / "run" / "clear"
    rates: dict[str, list[float]] = {}
    try:
        shm.mkdir(mode=0o700)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_image.py"), "--ref", image], check=True
        )
        env = dict(os.environ)
        sim_port, reg_port, id_port = free_port(), free_port(), free_port()
        ssh_port, plain_port, tls_port, internal_port = (free_port() for _ in range(4))
        sim_url, reg_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{reg_port}"
        id_url = f"http://127.0.0.1:{id_port}"
        id_env = env | {
            "MOCK_TDX_URL": sim_url,
            "REGISTRY_URL": reg_url,
            "STORAGE_PATH": str(tmp / "id"),
            "SSH_LISTEN": "127.0.0.1",
            "SSH_PORT": str(ssh_port),
            "WORKLOAD_PORT": str(plain_port),
            "WORKLOAD_TLS_PORT": str(tls_port),
            "WORKLOAD_INTERNAL_PORT": str(internal_port),
            "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
            "FRONT_RUNTIME_DIR": str(shm / "front"),
            "CLEAR_MOUNT_DIR": str(clear_dir),
            "STORE_KEY_PATH": str(tmp / "td-root" / "store.key"),
            "CONTAINER_NAME": container,
        }
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                started(
                    [
                        program("tdx-sim"),
                        "--listen",
                        f"127.0.0.1:{sim_port}",
                        "--state-dir",
                        str(tmp / "sim"),
                    ],
                    sim_url + "/root_ca.pem",
                    tmp / "sim.log",
                    env,
                )
            )
            stack.enter_context(
                started(
                    [program("tdx-registry"), "--host", "127.0.0.1", "--port", str(reg_port)],
                    reg_url + "/instance/" + "00" * 32,
                    tmp / "registry.log",
                    env
                    | {
                        "PCCS_URL": sim_url,
                        "TDX_TRUSTED_ROOT_CA": str(tmp / "sim" / "root_ca.pem"),
                        "REGISTRY_DB_PATH": str(tmp / "registry.db"),
                        **td_image_allowlists(DEFAULT_MR_TD),
                    },
                )
            )
            stack.enter_context(
                started(
                    [program("identity-svc"), "--host", "127.0.0.1", "--port", str(id_port)],
                    id_url + "/instance/pubkey",
                    tmp / "id.log",
                    id_env,
                )
            )
            instance, owner = register(id_url)
            signed(
                id_url + "/workload/configure",
                owner,
                1,
                {
                    "instance_pubkey": instance.hex(),
                    "image": image,
                    "persist_dirs": ["/www"],
                    "port": CONTAINER_PORT,
                },
            )
            signed(
                id_url + "/workload/expose",
                owner,
                2,
                {"instance_pubkey": instance.hex(), "image": image},
            )
            body = secrets.token_hex(args.body_bytes)[: args.body_bytes]
            wait_until(lambda: subprocess.run(
                ["podman", "exec", container, "sh", "-c", f"echo -n {body} > /www/index.html"],
                capture_output=True,
                check=False,
            ).returncode == 0)  # fmt: skip
            urls = {
                "HTTP direct to the container": f"http://127.0.0.1:{internal_port}/index.html",
                "HTTP through the front": f"http://127.0.0.1:{plain_port}/index.html",
                "HTTPS through the front": f"https://127.0.0.1:{tls_port}/index.html",
            }
            for url in urls.values():
                wait_until(answers(url))
            for _ in range(args.rounds):
                for name, url in urls.items():
                    rates.setdefault(name, []).append(wrk_rate(url, args.seconds, args.connections))
    finally:
        nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
        if nginx is not None:  # the stopped identity service left its front serving
            stop_left_front(shm / "front", nginx)
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", container], capture_output=True, check=False
        )
        subprocess.run(
            ["fusermount3", "-u", "-z", str(clear_dir)], capture_output=True, check=False
        )
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["HTTP direct to the container"]
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:.0f}s, GET of {args.body_bytes} bytes, "
        f"median of {args.rounds}; the container: busybox httpd (one connection per request)"
    )
    print(f"{'path':30} {'req/s':>10} {'min..max':>13} {'ratio':>7} {'target':>8}")
    for name, value in medians.items():
        spread = f"{min(rates[name]):.0f}..{max(rates[name]):.0f}"
        target = TARGETS.get(name)
        if target is None:
            print(f"{name:30} {value:10.0f} {spread:>13} {'1.00x':>7} {'baseline':>8}")
            continue
        mark = "" if value / base >= target else "  (below target)"
        print(
            f"{name:30} {value:10.0f} {spread:>13} {value / base:6.2f}x "
            f"{'>=' + str(target) + 'x':>8}{mark}"
        )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
