"""Start an installed program, wait until it answers HTTP, stop it gracefully.

The one implementation behind the end-to-end tests, the benchmarks and the demo.

    LaunchError
     ├── NotInstalled      the console script is neither beside the interpreter nor on PATH
     ├── ExitedEarly       the program exited before it answered
     ├── NotReady          it did not answer within the time allowed (it is stopped)
     └── IgnoredStop       it did not exit on SIGTERM in time (it is killed)
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOG_TAIL_CHARS = 8000


class LaunchError(RuntimeError):
    """A program could not be started, did not answer, or did not stop."""


class NotInstalled(LaunchError):
    """The console script is not installed."""


class ExitedEarly(LaunchError):
    """The program exited before it answered."""


class NotReady(LaunchError):
    """The program did not answer within the time allowed."""


class IgnoredStop(LaunchError):
    """The program did not exit on SIGTERM within the time allowed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def installed_program(name: str) -> str:
    """The console script `name` beside the running interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise NotInstalled(f"{name} is not installed: install the project's apps first")
    return found


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether `GET url` gets any HTTP answer below 500 (a 404 counts: the server is up)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class Program:
    """A program to run: its command line, environment, log file, and the URL that answers once
    it is ready (`url` + `ready_path`)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    url: str
    ready_path: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ready_url(self) -> str:
        return self.url + self.ready_path

    def start(self, timeout: float = 30.0, poll: float = 0.1) -> Program:
        """Start it (output appended to `log_path`) and wait until `ready_url` answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - the caller's argv, never a shell
                list(self.argv), env=dict(self.env), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ExitedEarly(
                    f"{self.name} exited with {self.proc.returncode} (log {self.log_path}):\n"
                    f"{self.log()}"
                )
            if answers(self.ready_url):
                return self
            time.sleep(poll)
        with contextlib.suppress(IgnoredStop):
            self.stop()
        raise NotReady(
            f"{self.name} did not answer at {self.ready_url} within {timeout:g} s:\n{self.log()}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; SIGKILL only if it hangs (`IgnoredStop`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise IgnoredStop(f"{self.name} ignored SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        """The end of its log file ("" when there is none yet)."""
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


@contextlib.contextmanager
def running(*programs: Program) -> Iterator[tuple[Program, ...]]:
    """Start `programs` in order, yield them, stop those started in reverse order."""
    started: list[Program] = []
    try:
        for program in programs:
            started.append(program.start())
        yield programs
    finally:
        for program in reversed(started):
            with contextlib.suppress(IgnoredStop):
                program.stop()
