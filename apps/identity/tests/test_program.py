"""The real `identity-svc` program: serves, keeps its identity across restarts, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import serve_mock_tdx


@pytest.fixture
def mock_tdx_url() -> Iterator[str]:
    with serve_mock_tdx() as server:
        yield server.url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(storage: Path, mock_tdx_url: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_PATH"}
    env["MOCK_TDX_URL"] = mock_tdx_url
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdx_identity.cli",
            "--port",
            str(port),
            "--storage-path",
            str(storage),
            "--configfs-tsm-path",
            str(storage / "absent"),
            "--registry-url",
            "http://127.0.0.1:9",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_pubkey(port: int, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"identity-svc exited: {process.communicate()[1]}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/instance/pubkey", timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        assert response.status_code == 200
        pubkey: str = response.json()["pubkey"]
        return pubkey
    raise AssertionError("identity-svc did not start")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def test_program_serves_keeps_its_key_and_stops_gracefully(
    tmp_path: Path, mock_tdx_url: str
) -> None:
    storage = tmp_path / "storage"
    port = free_port()
    process = start(storage, mock_tdx_url, port)
    try:
        first = wait_for_pubkey(port, process)
        operator = Ed25519PrivateKey.generate()
        unreachable = httpx.post(
            f"http://127.0.0.1:{port}/operator/register",
            json={
                "pubkey": operator.public_key().public_bytes_raw().hex(),
                "signature": operator.sign(bytes.fromhex(first)).hex(),
            },
            timeout=30,
        )
        assert unreachable.status_code == 502
        assert unreachable.json()["error"].startswith("registry unavailable")
        assert httpx.get(f"http://127.0.0.1:{port}/nope").json()["error"]
    finally:
        stderr = stop(process)
    assert "Traceback" not in stderr

    process = start(storage, mock_tdx_url, port)
    try:
        assert wait_for_pubkey(port, process) == first
    finally:
        stop(process)


def test_a_stop_signal_during_start_up_still_stops_gracefully(
    tmp_path: Path, mock_tdx_url: str
) -> None:
    """Sanic's own handlers come late; a SIGTERM as the worker starts must not be lost."""
    storage = tmp_path / "storage"
    port = free_port()
    for _ in range(3):
        process = start(storage, mock_tdx_url, port)
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "Starting worker" in line:
                process.send_signal(signal.SIGTERM)
                break
        try:
            rest, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError("the stop signal was lost: " + "".join(seen)) from None
        assert process.returncode == 0, "".join(seen) + rest
        assert "Traceback" not in rest
