"""Run one external program without a shell, with a deadline, and summarize its stderr."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tdx_identity.exceptions import ProgramTimeout

_SUMMARY_CHARS: Final = 300
_log = logging.getLogger("tdx_identity.workload")


@dataclass(frozen=True)
class Completed:
    """Exit status and captured output of a finished program."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def error_summary(self) -> str:
        return summarize(self.stderr)


def summarize(stderr: bytes) -> str:
    """The last meaningful stderr lines, printable and bounded, for an error message."""
    text = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    summary = " | ".join(lines[-3:]) if lines else "no error output"
    summary = "".join(ch if ch.isprintable() else "?" for ch in summary)
    if len(summary) > _SUMMARY_CHARS:
        summary = "..." + summary[-_SUMMARY_CHARS:]
    return summary


async def run_program(
    argv: Sequence[str],
    *,
    time_limit: float,
    stdin_data: bytes | None = None,
    daemonizes: bool = False,
) -> Completed:
    """Run `argv` to completion and return its exit status and output.

    `stdin_data` is written to a pipe and the pipe closed (never put on the command line).
    With `daemonizes`, the program leaves a background child that may keep inherited output
    descriptors open: output then goes to unnamed temporary files and only the exit of the
    program itself is awaited.
    """
    started = time.perf_counter()
    try:
        if daemonizes:
            return await _run_daemonizing(argv, time_limit=time_limit, stdin_data=stdin_data)
        return await _run(argv, time_limit=time_limit, stdin_data=stdin_data)
    finally:
        _log.debug(
            "program finished",
            extra={"program": list(argv[:2]), "ms": round((time.perf_counter() - started) * 1000)},
        )


async def _run(argv: Sequence[str], *, time_limit: float, stdin_data: bytes | None) -> Completed:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin_data), time_limit)
    except TimeoutError:
        await _kill(proc)
        raise ProgramTimeout(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} timed out") from None
    except BaseException:
        await _kill(proc)
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, stdout, stderr)


async def _run_daemonizing(
    argv: Sequence[str], *, time_limit: float, stdin_data: bytes | None
) -> Completed:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            if stdin_data is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin_data)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await proc.stdin.drain()
                proc.stdin.close()
            await asyncio.wait_for(proc.wait(), time_limit)
        except TimeoutError:
            await _kill(proc)
            raise ProgramTimeout(f"{argv[0]} timed out") from None
        except BaseException:
            await _kill(proc)
            raise
        out.seek(0)
        err.seek(0)
        assert proc.returncode is not None
        return Completed(proc.returncode, out.read(65536), err.read(65536))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
