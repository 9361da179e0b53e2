"""Helpers shared by the benchmarks: ports, installed programs, processes started and stopped.

The process handling is tdx_service_kit.testing's (the same as the tests' and the demo's); here
a program that cannot start ends the benchmark with its reason instead of a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tdx_service_kit.testing import LaunchError, Program, free_port, installed_program

__all__ = ["free_port", "program", "started"]


def program(name: str) -> str:
    """The installed console script `name`; exits the benchmark when it is not installed."""
    try:
        return installed_program(name)
    except LaunchError as exc:
        sys.exit(f"bench: {exc}")


@contextlib.contextmanager
def started(argv: list[str], ready: str, log: Path, env: dict[str, str]) -> Iterator[Program]:
    """Run `argv` (output to `log`) while the block runs, once `ready` (a URL) answers; the
    block gets the running Program (e.g. to read its process's CPU time)."""
    parts = urlsplit(ready)
    base = f"{parts.scheme}://{parts.netloc}"
    proc = Program(Path(argv[0]).name, argv, env, base, ready[len(base) :], log)
    log.unlink(missing_ok=True)
    try:
        proc.start()
    except LaunchError as exc:
        sys.exit(f"bench: {exc}")
    try:
        yield proc
    finally:
        with contextlib.suppress(LaunchError):
            proc.stop()
