"""Benchmarks of the Workload and Measured-runtime issues, each beside its baseline, in one run.

1. configure -> SSH ready, expose -> port serving, identity restart -> serving again, each against
   a plain `podman run` of the same image to HTTP 200 (target: overhead <= 1.5x podman's start).
2. gocryptfs sequential write and read throughput against the plain disk (the ratio).
   Also: the longest time the front (plain HTTP and TLS, a new connection per request) stopped
   answering while the service restarted, and how many requests failed: the front is left
   serving by the stop and adopted by the next start.
3. measuring the helper executables at start-up against the whole identity-service start.

Run by hand as root after ./scripts/setup: `hatch run bench:workload`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port, program, started
from tdx_identity.settings import DEFAULT_FRONT_RUNTIME_PARENT
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_report_data import sign_instance_v2
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists

ROOT = Path(__file__).resolve().parent.parent
PODMAN_RUN_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def serving(url: str) -> Callable[[], bool]:
    """Any HTTP answer from the workload (its /www may still be empty: 404 counts). For an
    https URL the certificate is not verified: only whether the front answers is measured."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=0.5, verify=False).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def plain_podman_start(image: str) -> float:
    """Seconds from `podman run -d` to an HTTP answer on the published port, then removal."""
    port, name = free_port(), f"bench-plain-{secrets.token_hex(4)}"
    start = time.perf_counter()
    subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--name",
            name,
            *PODMAN_RUN_FLAGS,
            "-p",
            f"127.0.0.1:{port}:8080",
            image,
        ],
        check=True,
        capture_output=True,
    )
    wait_until(serving(f"http://127.0.0.1:{port}/"))
    elapsed = time.perf_counter() - start
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=True, capture_output=True)
    return elapsed


class DowntimeProbe:
    """Polls a URL from a thread; `stop()` returns the longest stretch it was not serving."""

    def __init__(self, url: str) -> None:
        self._check = serving(url)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.longest = 0.0
        self.requests = 0
        self.failures = 0

    def _run(self) -> None:
        down_since: float | None = None
        while not self._done.is_set():
            now = time.perf_counter()
            self.requests += 1
            if self._check():
                if down_since is not None:
                    self.longest = max(self.longest, now - down_since)
                down_since = None
            else:
                self.failures += 1
                if down_since is None:
                    down_since = now
            time.sleep(0.01)
        if down_since is not None:
            self.longest = max(self.longest, time.perf_counter() - down_since)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._done.set()
        self._thread.join(10)
        return self.longest


def signed(url: str, key: Ed25519PrivateKey, seq: int, body: dict[str, object]) -> None:
    """POST the owner's signed body naming its action (the route's last segment) and `seq`."""
    raw = json.dumps({"action": url.rsplit("/", 1)[-1], "seq": seq} | body).encode()
    r = httpx.post(url, content=raw, headers={"x-signature": key.sign(raw).hex()}, timeout=120)
    r.raise_for_status()


def throughput(directory: Path, size_mb: int) -> tuple[float, float]:
    """Sequential write (with fsync) and read MB/s of one file in `directory`."""
    block = os.urandom(1 << 20)
    path = directory / "bench.bin"
    start = time.perf_counter()
    with path.open("wb") as f:
        for _ in range(size_mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write = size_mb / (time.perf_counter() - start)
    with contextlib.suppress(OSError):  # drop the page cache so reads hit the store
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    start = time.perf_counter()
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass
    read = size_mb / (time.perf_counter() - start)
    path.unlink()
    return write, read


def gocryptfs_vs_disk(tmp: Path, size_mb: int) -> tuple[tuple[float, float], tuple[float, float]]:
    plain = tmp / "plain"
    cipher, clear = tmp / "cipher", tmp / "clear"
    for d in (plain, cipher, clear):
        d.mkdir()
    password = secrets.token_hex(32) + "\n"
    subprocess.run(
        ["gocryptfs", "-init", "-q", "-scryptn", "10", str(cipher)],
        input=password.encode(),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["gocryptfs", "-q", str(cipher), str(clear)],
        input=password.encode(),
        check=True,
        capture_output=True,
    )
    try:
        return throughput(plain, size_mb), throughput(clear, size_mb)
    finally:
        subprocess.run(["fusermount3", "-u", str(clear)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="plain podman runs to take the median of"
    )
    parser.add_argument("--size-mb", type=int, default=256, help="gocryptfs throughput file size")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tdx-bench-wl-"))
    image = f"localhost/tdx-bench-httpd-{secrets.token_hex(4)}:1"
    container = f"tdx-bench-{secrets.token_hex(4)}"
    clear_dir = tmp / "run" / "clear"
    rows: list[tuple[str, float, float]] = []
    front_dir: Path | None = None
    try:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_image.py"), "--ref", image], check=True
        )
        plain = statistics.median(plain_podman_start(image) for _ in range(args.rounds))
        env = dict(os.environ)
        sim_port, reg_port, id_port = free_port(), free_port(), free_port()
        ssh_port, wl_port, tls_port = free_port(), free_port(), free_port()
        sim_url, reg_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{reg_port}"
        id_url = f"http://127.0.0.1:{id_port}"
        front_dir = DEFAULT_FRONT_RUNTIME_PARENT / f"front-{id_port}"  # the default
        id_env = env | {
            "MOCK_TDX_URL": sim_url,
            "REGISTRY_URL": reg_url,
            "STORAGE_PATH": str(tmp / "id"),
            "SSH_LISTEN": "127.0.0.1",
            "SSH_PORT": str(ssh_port),
            "WORKLOAD_PORT": str(wl_port),
            "WORKLOAD_TLS_PORT": str(tls_port),
            "WORKLOAD_INTERNAL_PORT": str(free_port()),
            "WORKLOAD_PUBLISH_HOST": "127.0.0.1",
            "CLEAR_MOUNT_DIR": str(clear_dir),
            "STORE_KEY_PATH": str(tmp / "td-root" / "store.key"),
            "CONTAINER_NAME": container,
        }
        id_argv = [program("identity-svc"), "--host", "127.0.0.1", "--port", str(id_port)]
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
            start = time.perf_counter()
            with started(id_argv, id_url + "/instance/pubkey", tmp / "id.log", id_env):
                service_start = time.perf_counter() - start
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
                start = time.perf_counter()
                signed(
                    id_url + "/workload/configure",
                    owner,
                    1,
                    {
                        "instance_pubkey": instance.hex(),
                        "image": image,
                        "persist_dirs": ["/www"],
                        "port": 8080,
                    },
                )
                wait_until(lambda: listening(ssh_port))
                rows.append(("configure -> SSH ready", time.perf_counter() - start, plain))
                start = time.perf_counter()
                signed(
                    id_url + "/workload/expose",
                    owner,
                    2,
                    {"instance_pubkey": instance.hex(), "image": image},
                )
                wait_until(serving(f"http://127.0.0.1:{wl_port}/"))
                rows.append(("expose -> port serving", time.perf_counter() - start, plain))
                # From here probes watch both front ports through the service's restart.
                probes = [
                    DowntimeProbe(f"http://127.0.0.1:{wl_port}/"),
                    DowntimeProbe(f"https://127.0.0.1:{tls_port}/"),
                ]
                for probe in probes:
                    probe.start()
            start = time.perf_counter()
            with started(id_argv, id_url + "/instance/pubkey", tmp / "id2.log", id_env):
                wait_until(serving(f"http://127.0.0.1:{wl_port}/"))
                rows.append(("identity restart -> serving", time.perf_counter() - start, plain))
            plain_probe, tls_probe = probes
            downtime, tls_downtime = plain_probe.stop(), tls_probe.stop()
        measure = measure_helpers_seconds()
        (disk_w, disk_r), (gc_w, gc_r) = gocryptfs_vs_disk(tmp, args.size_mb)
    finally:
        nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
        if nginx is not None and front_dir is not None:  # the stopped service left it serving
            stop_left_front(front_dir, nginx)
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", container], capture_output=True, check=False
        )
        subprocess.run(
            ["fusermount3", "-u", "-z", str(clear_dir)], capture_output=True, check=False
        )
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'measurement':32} {'ours':>9} {'plain podman run':>17} {'ratio':>7} {'target':>7}")
    for name, ours, base in rows:
        mark = "" if ours / base <= 1.5 else "  (above target)"
        print(
            f"{name:32} {ours * 1000:7.0f}ms {base * 1000:15.0f}ms {ours / base:6.2f}x"
            f"  <=1.5x{mark}"
        )
    print(
        f"front downtime during the identity restart: plain HTTP {downtime * 1000:.0f}ms "
        f"({plain_probe.failures} of {plain_probe.requests} requests failed), TLS "
        f"{tls_downtime * 1000:.0f}ms ({tls_probe.failures} of {tls_probe.requests} failed); "
        "the front is left serving by the stop and adopted by the next start"
    )
    print(
        f"gocryptfs sequential write {gc_w:7.0f} MB/s vs plain disk {disk_w:7.0f} MB/s: "
        f"{gc_w / disk_w:.2f}x"
    )
    print(
        f"gocryptfs sequential read  {gc_r:7.0f} MB/s vs plain disk {disk_r:7.0f} MB/s: "
        f"{gc_r / disk_r:.2f}x"
    )
    print(
        f"measuring the helper executables {measure * 1000:.0f}ms, identity-svc start "
        f"{service_start * 1000:.0f}ms: {measure / service_start:.0%} of the start"
    )
    return 0


def measure_helpers_seconds() -> float:
    """Cold-ish cost of hashing and ELF-reading every helper the identity service runs."""
    from tdx_measure import find_helper, measure_executable

    names = {
        "podman": "podman",
        "oci-runtime": "runc",
        "conmon": "conmon",
        "gocryptfs": "gocryptfs",
        "fusermount": "fusermount3",
    }
    paths = {}
    for role, name in names.items():
        with contextlib.suppress(Exception):
            paths[role] = find_helper(name)
    if "conmon" not in paths:
        paths["conmon"] = Path("/usr/libexec/podman/conmon")
    start = time.perf_counter()
    for role, path in paths.items():
        measure_executable(path, role)
    return time.perf_counter() - start


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
