"""Stop signals in a real process, at every moment of start-up: before `run_app` (kept by
StartupSignals), in a start listener, and right after the first answer (where Sanic's own runner
used to drop them). Each ends in a graceful stop: the stop listeners run and the exit is 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdx_service_kit.testing import answers, free_port

# Marks in a file which start-up window the program is in, then stays in it for a second.
SERVER = """
import asyncio, pathlib, sys, time
from sanic import Sanic
from sanic.response import json
from tdx_service_kit import ListenError, StartupSignals, configure_logging, run_app

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
        await asyncio.sleep(1.0)

@app.after_server_start
async def after_start(app):
    if window == "after_server_start":
        marks.write_text("in window")
        await asyncio.sleep(1.0)

@app.after_server_stop
async def stopped(app):
    print("graceful stop", flush=True)

signals = StartupSignals().install()
if window == "before_run":
    marks.write_text("in window")
    time.sleep(1.0)
    print("received before serving:", signals.received, flush=True)
try:
    run_app(app, host="127.0.0.1", port=port, signals=signals)
except ListenError as exc:
    print("listen error:", exc, flush=True)
    sys.exit(1)
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
    during_start = [r for r in records if "stop signal received during start-up" in r["message"]]
    assert [r.get("signal") for r in during_start] == [int(signum)]
    assert not any(r["message"] == "serving" for r in records)
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_right_after_the_first_answer_stops_gracefully(
    tmp_path: Path, signum: int
) -> None:
    # Sanic's runner answered before its main loop ran and set the signals to SIG_IGN on the
    # way: a stop sent on the first answer was lost about once in ten starts on a busy machine.
    for attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), str(tmp_path / f"m{attempt}"), "none"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not answers(f"http://127.0.0.1:{port}/ok"):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the program never answered"
                time.sleep(0.005)
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, out
        assert "graceful stop" in out
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        stops = [r for r in records if r["message"].startswith("stop signal received")]
        assert [r.get("signal") for r in stops] == [int(signum)]


def test_an_address_in_use_fails_before_any_listener_runs(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                SERVER,
                str(port),
                str(tmp_path / "marks"),
                "before_server_start",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 1
    assert f"listen error: cannot listen on 127.0.0.1:{port}" in out.stdout
    assert not (tmp_path / "marks").exists()
