"""run_app in a real process: JSON logs only, in-flight requests finish on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tdx_service_kit.testing import Program, free_port, running

SERVER = """
import asyncio, sys
from sanic import Sanic
from sanic.response import json
from tdx_service_kit import HttpLimits, RateLimit, configure_logging, install_common, run_app

configure_logging("INFO")
app = Sanic("kit-run-test")
install_common(app, limits=HttpLimits(), rate_limit=RateLimit())

@app.get("/slow")
async def slow(request):
    await asyncio.sleep(1.0)
    return json({"done": True})

@app.get("/ok")
async def ok(request):
    return json({"ok": True})

run_app(app, host="127.0.0.1", port=int(sys.argv[1]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_lets_in_flight_request_finish_then_exits_cleanly(
    tmp_path: Path, signum: int
) -> None:
    port = free_port()
    program = Program(
        "kit-run-test",
        [sys.executable, "-c", SERVER, str(port)],
        dict(os.environ),
        f"http://127.0.0.1:{port}",
        "/ok",
        tmp_path / "server.log",
    )
    with running(program):
        assert program.proc is not None
        result: dict[str, httpx.Response] = {}
        slow = threading.Thread(
            target=lambda: result.setdefault("r", httpx.get(f"{program.url}/slow", timeout=10))
        )
        slow.start()
        time.sleep(0.3)
        program.proc.send_signal(signum)
        slow.join(timeout=15)
        returncode = program.proc.wait(timeout=20)
    assert result["r"].status_code == 200
    assert result["r"].json() == {"done": True}
    assert returncode == 0
    lines = [line for line in program.log_path.read_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [r["message"] for r in records if r["logger"] == "tdx_service_kit"] == [
        "serving",
        "stop signal received; stopping",
        "stopped",
    ]
    assert any(r.get("path") == "/slow" and r.get("status") == 200 for r in records)


HANGING_SERVER = """
import asyncio, sys, time
from concurrent.futures import ThreadPoolExecutor
from sanic import Sanic
from sanic.response import json
from tdx_service_kit import HttpLimits, configure_logging, install_common, run_app

configure_logging("INFO")
app = Sanic("kit-run-hang")
install_common(app, limits=HttpLimits(), rate_limit=None)
hang = sys.argv[2]
executor = ThreadPoolExecutor(max_workers=1)

@app.get("/ok")
async def ok(request):
    if hang == "exit":  # a database thread still busy: the interpreter joins it at exit
        executor.submit(time.sleep, 120)
    return json({"ok": True})

@app.after_server_stop
async def stuck(app):
    if hang == "listener":  # a listener that blocks the loop (a blocking executor shutdown)
        time.sleep(120)

run_app(app, host="127.0.0.1", port=int(sys.argv[1]), graceful_seconds=1.0,
        stop_margin_seconds=2.0)
"""


@pytest.mark.parametrize("hang", ["listener", "exit"])
def test_a_stop_that_hangs_ends_within_its_bound(tmp_path: Path, hang: str) -> None:
    port = free_port()
    program = Program(
        "kit-run-hang",
        [sys.executable, "-c", HANGING_SERVER, str(port), hang],
        dict(os.environ),
        f"http://127.0.0.1:{port}",
        "/ok",
        tmp_path / "server.log",
    )
    with running(program):
        assert program.proc is not None
        assert httpx.get(f"{program.url}/ok", timeout=5).status_code == 200
        started = time.monotonic()
        program.proc.send_signal(signal.SIGTERM)
        returncode = program.proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    # The bound is graceful_seconds + stop_margin_seconds = 3 s from the signal.
    assert 2.5 <= elapsed < 6.0
    assert returncode == 70
    records = [json.loads(line) for line in program.log_path.read_text().splitlines() if line]
    overrun = [r for r in records if r["message"].startswith("stop did not finish")]
    assert overrun and overrun[0]["bound_seconds"] == 3.0
