"""Start the project's real programs on loopback for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def program(name: str) -> str:
    """The console script `name` installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: install the project's apps first")
    return found


@dataclass
class Program:
    """A running program, its address and its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    ready_path: str
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Program:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code < 500:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait for a graceful exit; SIGKILL only if it hangs (and say so)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.name} ignored SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "PCCS_", "TDX_"))}
    env.pop("SKIP_TDX_AUTH", None)
    env.pop("MOCK_TDX_URL", None)
    env.pop("STORAGE_PATH", None)
    env.update(extra)
    return env


def sim(tmp: Path, flags: Sequence[str] = ()) -> Program:
    port = free_port()
    state = tmp / "sim-state"
    return Program(
        "tdx-sim",
        [program("tdx-sim"), "--listen", f"127.0.0.1:{port}", "--state-dir", str(state), *flags],
        base_env(),
        port,
        tmp / f"sim-{port}.log",
        "/root_ca.pem",
    )


def registry(
    tmp: Path, sim_url: str, root_ca: Path | None, db_url: str | None = None, **extra_env: str
) -> Program:
    port = free_port()
    env = base_env(PCCS_URL=sim_url, REGISTRY_DB_PATH=str(tmp / "registry.db"), **extra_env)
    if root_ca is not None:
        env["TDX_TRUSTED_ROOT_CA"] = str(root_ca)
    if db_url is not None:
        env["REGISTRY_DB_URL"] = db_url
    return Program(
        "tdx-registry",
        [program("tdx-registry"), "--host", "127.0.0.1", "--port", str(port)],
        env,
        port,
        tmp / f"registry-{port}.log",
        "/instance/" + "00" * 32,
    )


def identity(tmp: Path, sim_url: str, registry_url: str, **extra_env: str) -> Program:
    port = free_port()
    env = base_env(
        MOCK_TDX_URL=sim_url,
        REGISTRY_URL=registry_url,
        STORAGE_PATH=str(tmp / "identity"),
        **extra_env,
    )
    return Program(
        "identity-svc",
        [program("identity-svc"), "--host", "127.0.0.1", "--port", str(port)],
        env,
        port,
        tmp / f"identity-{port}.log",
        "/instance/pubkey",
    )


@contextlib.contextmanager
def running(*programs: Program) -> Iterator[tuple[Program, ...]]:
    started: list[Program] = []
    try:
        for p in programs:
            started.append(p.start())
        yield programs
    finally:
        for p in reversed(started):
            with contextlib.suppress(RuntimeError):
                p.stop()
