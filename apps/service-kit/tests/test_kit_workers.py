"""run_workers in real processes: several workers on one socket, stops forwarded and bounded, a
dead worker ending the service, metrics summed over the workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tdx_service_kit import (
    MAX_WORKERS,
    WORKER_DIED_EXIT_STATUS,
    ListenError,
    WorkerError,
    run_workers,
)
from tdx_service_kit.testing import Program, free_port, running

# A file, not `python -c`: each spawned worker imports the parent's main module by its path to
# find `factory` (the part under __main__ runs in the parent only).
SERVER = """
import asyncio, os, sys, tempfile, time
from functools import partial
from sanic import Sanic
from sanic.response import json
from tdx_service_kit import (
    HttpLimits, OpsMetrics, OpenApiDocument, StartupSignals, configure_logging,
    install_common, install_ops, run_workers,
)

DOC = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}

def factory(mode, index):
    configure_logging("INFO")
    if mode == "fail" and index == 1:
        raise RuntimeError("worker 1 cannot start")
    app = Sanic("kit-workers")
    install_common(app, limits=HttpLimits(), rate_limit=None)
    ops = install_ops(app, openapi=OpenApiDocument.from_object(DOC), checks=[])
    served = ops.metrics.counter("served", "requests served by /pid")

    @app.get("/pid")
    async def pid(request):
        served.inc()
        return json({"pid": os.getpid(), "index": index,
                     "metrics_dir": os.environ.get("PROMETHEUS_MULTIPROC_DIR")})

    @app.get("/slow")
    async def slow(request):
        await asyncio.sleep(1.0)
        return json({"done": True, "pid": os.getpid()})

    @app.get("/block")
    async def block(request):
        time.sleep(60)  # blocks this worker's loop: its stop cannot run
        return json({})

    return app

if __name__ == "__main__":
    mode = sys.argv[2]
    signals = StartupSignals().install()
    configure_logging("INFO")
    if mode == "early-stop":
        os.kill(os.getpid(), 15)  # a stop recorded before the workers start
    status = run_workers(partial(factory, mode), workers=int(sys.argv[3]), host="127.0.0.1",
                         port=int(sys.argv[1]), signals=signals, graceful_seconds=1.0,
                         stop_margin_seconds=2.0)
    print(f"parent status {status}", file=sys.stderr, flush=True)
    sys.exit(status)
"""


def _program(tmp_path: Path, mode: str, workers: int = 2) -> Program:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return Program(
        "kit-workers",
        [sys.executable, str(script), str(port), mode, str(workers)],
        env,
        f"http://127.0.0.1:{port}",
        "/healthz",
        tmp_path / "server.log",
    )


def _run_to_end(program: Program, timeout: float) -> int:
    """Run the program without waiting for it to answer; its exit status."""
    with program.log_path.open("ab") as log:
        proc = subprocess.run(
            list(program.argv),
            env=dict(program.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return proc.returncode


def _records(program: Program) -> list[dict[str, Any]]:
    lines = program.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _pids_seen(url: str, rounds: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    for _ in range(rounds):
        # a new connection each time: the kernel hands it to a worker waiting in accept
        answer = httpx.get(f"{url}/pid", timeout=5, headers={"Connection": "close"}).json()
        seen[answer["pid"]] = seen.get(answer["pid"], 0) + 1
    return seen


def _workers(program: Program) -> set[int]:
    """The worker pids the parent logged once it started them (empty until then)."""
    started = [r for r in _records(program) if r["message"] == "workers started"]
    return {int(pid) for pid in started[0]["pids"].split(",")} if started else set()


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_two_workers_share_the_socket_and_stop_gracefully(tmp_path: Path) -> None:
    program = _program(tmp_path, "serve")
    with running(program):
        assert program.proc is not None
        assert _wait_for(lambda: len(_workers(program)) == 2, 10)
        workers = _workers(program)
        # Both workers answer (each accepts while the other is busy with a slow request).
        assert _wait_for(lambda: set(_pids_seen(program.url, 20)) == workers, 20)
        result: dict[str, httpx.Response] = {}
        slow = threading.Thread(
            target=lambda: result.setdefault("r", httpx.get(f"{program.url}/slow", timeout=10))
        )
        slow.start()
        time.sleep(0.3)
        program.proc.send_signal(signal.SIGTERM)
        slow.join(timeout=15)
        status = program.proc.wait(timeout=20)
    assert status == 0
    assert result["r"].status_code == 200 and result["r"].json()["done"] is True
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    records = _records(program)
    messages = [r["message"] for r in records]
    assert sorted(int(r["worker"]) for r in records if r["message"] == "serving") == [0, 1]
    assert messages.count("stopped") == 3  # each worker, then the parent
    assert "workers started" in messages
    assert "Traceback" not in program.log_path.read_text()


def test_metrics_sum_every_workers_values_in_a_private_directory(tmp_path: Path) -> None:
    program = _program(tmp_path, "serve")
    with running(program):
        assert program.proc is not None
        assert _wait_for(lambda: len(_workers(program)) == 2, 10)
        dirs: set[str] = set()
        seen: dict[int, int] = {}

        def both_served() -> bool:
            answer = httpx.get(f"{program.url}/pid", timeout=5, headers={"Connection": "close"})
            dirs.add(answer.json()["metrics_dir"])
            seen[answer.json()["pid"]] = seen.get(answer.json()["pid"], 0) + 1
            return len(seen) == 2

        assert _wait_for(both_served, 20)
        total = sum(seen.values())
        for _ in range(4):  # whichever worker answers the scrape, it shows both workers' counts
            text = httpx.get(f"{program.url}/metrics", timeout=5, headers={"Connection": "close"})
            lines = [x for x in text.text.splitlines() if x.startswith("kit_workers_served_total")]
            assert lines == [f"kit_workers_served_total {float(total)}"], lines
        (metrics_dir,) = dirs
        assert metrics_dir and Path(metrics_dir).is_dir()
        assert oct(Path(metrics_dir).stat().st_mode & 0o777) == "0o700"
        program.proc.send_signal(signal.SIGTERM)
        assert program.proc.wait(timeout=20) == 0
    assert not Path(metrics_dir).exists()  # removed with the run


def test_a_killed_worker_ends_the_service_for_its_supervisor(tmp_path: Path) -> None:
    program = _program(tmp_path, "serve")
    with running(program):
        assert program.proc is not None
        assert _wait_for(lambda: len(_workers(program)) == 2, 10)
        assert httpx.get(f"{program.url}/pid", timeout=5).status_code == 200
        victim, survivor = sorted(_workers(program))
        os.kill(victim, signal.SIGKILL)
        status = program.proc.wait(timeout=20)
    assert status == WORKER_DIED_EXIT_STATUS
    assert not Path(f"/proc/{survivor}").exists()
    ended = [r for r in _records(program) if r["message"].startswith("a worker ended")]
    assert ended and ended[0]["pid"] == victim and ended[0]["status"] == -signal.SIGKILL


def test_a_worker_that_cannot_build_its_app_ends_the_service_without_a_traceback(
    tmp_path: Path,
) -> None:
    program = _program(tmp_path, "fail")
    status = _run_to_end(program, 30)
    assert status == WORKER_DIED_EXIT_STATUS
    text = program.log_path.read_text()
    assert "Traceback" not in text
    failed = [r for r in _records(program) if r["message"] == "the worker failed"]
    assert failed == [failed[0]] and failed[0]["worker"] == 1
    assert "worker 1 cannot start" in failed[0]["reason"]


def test_a_stop_before_the_workers_start_starts_none(tmp_path: Path) -> None:
    program = _program(tmp_path, "early-stop")
    status = _run_to_end(program, 20)
    assert status == 0
    messages = [r["message"] for r in _records(program)]
    assert "serving" not in messages


def test_a_worker_that_hangs_is_killed_at_the_bound(tmp_path: Path) -> None:
    program = _program(tmp_path, "serve", workers=1)
    with running(program):
        assert program.proc is not None

        def block() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the killed worker answers nothing
                httpx.get(f"{program.url}/block", timeout=30)

        blocked = threading.Thread(target=block, daemon=True)
        blocked.start()
        time.sleep(0.5)
        started = time.monotonic()
        program.proc.send_signal(signal.SIGTERM)
        status = program.proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    # graceful_seconds + stop_margin_seconds = 3 s from the signal, then SIGKILL.
    assert 2.5 <= elapsed < 6.0
    assert status == 70
    killed = [r for r in _records(program) if r["message"].startswith("a worker did not stop")]
    assert killed and killed[0]["bound_seconds"] == 3.0


def test_a_bad_number_of_workers_or_a_busy_address_fails_before_any_worker() -> None:
    for workers in (0, MAX_WORKERS + 1):
        with pytest.raises(WorkerError):
            run_workers(lambda index: None, workers=workers, host="127.0.0.1", port=1)  # type: ignore[arg-type,return-value]
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ListenError):
            run_workers(lambda index: None, workers=2, host="127.0.0.1", port=port)  # type: ignore[arg-type,return-value]
