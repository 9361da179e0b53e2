"""run_app in a real process: JSON logs only, in-flight requests finish on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_lets_in_flight_request_finish_then_exits_cleanly(signum: int) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/ok", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        result: dict[str, httpx.Response] = {}
        slow = threading.Thread(
            target=lambda: result.setdefault(
                "r", httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10)
            )
        )
        slow.start()
        time.sleep(0.3)
        proc.send_signal(signum)
        slow.join(timeout=15)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert result["r"].status_code == 200
    assert result["r"].json() == {"done": True}
    assert proc.returncode == 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is JSON, Sanic's included
    assert any(r["logger"].startswith("sanic") for r in records)
    assert any(r.get("path") == "/slow" and r.get("status") == 200 for r in records)
