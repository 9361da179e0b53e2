"""The real `identity-svc` program: serves, keeps its identity across restarts, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import serve_mock_tdx

from tdx_service_kit.testing import Program, free_port, running


@pytest.fixture
def mock_tdx_url() -> Iterator[str]:
    with serve_mock_tdx() as server:
        yield server.url


def argv(storage: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "tdx_identity.cli",
        "--port", str(port),
        "--storage-path", str(storage),
        "--configfs-tsm-path", str(storage / "absent"),
        "--registry-url", "http://127.0.0.1:9",
    ]  # fmt: skip


def environment(mock_tdx_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_PATH"}
    env["MOCK_TDX_URL"] = mock_tdx_url
    return env


def identity_program(tmp_path: Path, mock_tdx_url: str, port: int) -> Program:
    return Program(
        name="identity-svc",
        argv=argv(tmp_path / "storage", port),
        env=environment(mock_tdx_url),
        url=f"http://127.0.0.1:{port}",
        ready_path="/instance/pubkey",
        log_path=tmp_path / "identity.log",
    )


def pubkey_of(program: Program) -> str:
    response = httpx.get(program.url + "/instance/pubkey", timeout=5)
    assert response.status_code == 200
    pubkey: str = response.json()["pubkey"]
    return pubkey


def test_program_serves_keeps_its_key_and_stops_gracefully(
    tmp_path: Path, mock_tdx_url: str
) -> None:
    program = identity_program(tmp_path, mock_tdx_url, free_port())
    with running(program):
        first = pubkey_of(program)
        operator = Ed25519PrivateKey.generate()
        unreachable = httpx.post(
            program.url + "/operator/register",
            json={
                "pubkey": operator.public_key().public_bytes_raw().hex(),
                "signature": operator.sign(bytes.fromhex(first)).hex(),
            },
            timeout=30,
        )
        assert unreachable.status_code == 503
        assert unreachable.json()["error"].startswith("the registry has not been reached yet")
        assert int(unreachable.headers["retry-after"]) >= 1
        assert httpx.get(program.url + "/nope").json()["error"]
        assert program.stop() == 0
    assert "Traceback" not in program.log()

    with running(program):
        assert pubkey_of(program) == first
        assert program.stop() == 0


def test_a_stop_signal_during_start_up_still_stops_gracefully(
    tmp_path: Path, mock_tdx_url: str
) -> None:
    """A SIGTERM as the service is about to serve (its checks done, the listeners to come) is
    kept through `run_app`'s start: the service stops gracefully, without a traceback."""
    storage = tmp_path / "storage"
    port = free_port()
    for _ in range(3):
        process = subprocess.Popen(
            argv(storage, port),
            env=environment(mock_tdx_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "identity service starting" in line:
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
