"""StartupSignals in a real process: a stop signal sent while the program starts (before Sanic's
own handlers are in place, or before its main loop runs) is kept and delivered again once the
server runs, so the program still stops gracefully."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdx_service_kit.testing import free_port

# Marks in a file which start-up window the program is in, then stays in it for a second.
SERVER = """
import asyncio, pathlib, sys, time
from sanic import Sanic
from sanic.response import json
from tdx_service_kit import StartupSignals, configure_logging, run_app

port, marks, window = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
configure_logging("INFO")
app = Sanic("kit-startup-signals")

@app.get("/ok")
async def ok(request):
    return json({"ok": True})

@app.before_server_start
async def before_start(app):
    if window == "before_server_start":
        marks.write_text("in window")
        time.sleep(1.0)

@app.after_server_start
async def after_start(app):  # registered before attach(): the guard must still run first
    if window == "after_server_start":
        marks.write_text("in window")
        await asyncio.sleep(1.0)

@app.after_server_stop
async def stopped(app):
    print("graceful stop", flush=True)

signals = StartupSignals().install()
signals.attach(app)
if window == "before_run":
    marks.write_text("in window")
    time.sleep(1.0)
    print("received before serving:", signals.received, flush=True)
run_app(app, host="127.0.0.1", port=port)
"""


def _run_and_signal_in_window(tmp_path: Path, window: str, signum: int) -> tuple[int, str]:
    marks = tmp_path / "marks"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(free_port()), str(marks), window],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not marks.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the program never reached the window"
            time.sleep(0.01)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


@pytest.mark.parametrize("window", ["before_run", "before_server_start", "after_server_start"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_gracefully_once_serving(
    tmp_path: Path, window: str, signum: int
) -> None:
    code, out = _run_and_signal_in_window(tmp_path, window, signum)
    assert code == 0, out
    assert "graceful stop" in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    redelivered = [r for r in records if "stop signal received during start-up" in r["message"]]
    assert [r.get("signal") for r in redelivered] == [int(signum)]
    if window == "before_run":
        assert f"received before serving: {int(signum)}" in out


def test_received_is_none_until_a_signal_and_keeps_the_first() -> None:
    code = (
        "import os, signal\n"
        "from tdx_service_kit import StartupSignals\n"
        "s = StartupSignals()\n"
        "assert s.received is None\n"
        "s.install()\n"
        "assert s.received is None\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print(s.received)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == str(int(signal.SIGTERM))
