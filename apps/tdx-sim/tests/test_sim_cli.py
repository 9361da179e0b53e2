"""`tdx-sim` as a real process: flags, serving, restart, graceful stop, start-up errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_service_kit.testing import Program, free_port, running

REPORT_DATA = bytes(range(64))
TDX_SIM = [sys.executable, "-c", "import sys; from tdx_sim.cli import main; sys.exit(main())"]


@contextmanager
def sim_process(state_dir: Path, *flags: str) -> Iterator[tuple[str, Program]]:
    """Start `tdx-sim` on a free port, wait until it answers, and stop it with SIGTERM after."""
    port = free_port()
    program = Program(
        "tdx-sim",
        [*TDX_SIM, "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir), *flags],
        dict(os.environ),
        f"http://127.0.0.1:{port}",
        "/root_ca.pem",
        state_dir.parent / f"tdx-sim-{port}.log",
    )
    with running(program):
        yield program.url, program


def test_help_lists_every_flag() -> None:
    out = subprocess.run([*TDX_SIM, "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--listen", "--state-dir", "--debug-td", "--tcb-status", "--revoke-pck", "--mrtd"):
        assert flag in out
    assert "never" in out and "production" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--listen", "127.0.0.1:0"],
        ["--listen", "nohost"],
        ["--tcb-status", "Great"],
        ["--mrtd", "00"],
        [],
    ],
)
def test_bad_command_lines_exit_2(tmp_path: Path, flags: list[str]) -> None:
    state = [] if not flags else ["--state-dir", str(tmp_path)]
    result = subprocess.run([*TDX_SIM, *state, *flags], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_serves_quotes_and_keeps_its_pki_across_restarts(state_dir: Path) -> None:
    with sim_process(state_dir) as (base, _):
        root_first = httpx.get(f"{base}/root_ca.pem").content
        ppid_first = quote_ppid(
            parse_quote(httpx.get(f"{base}/attest/{REPORT_DATA.hex()}").content)
        )
    assert (state_dir / "root_ca.pem").read_bytes() == root_first
    with sim_process(state_dir, "--tcb-status", "OutOfDate") as (base, _):
        assert httpx.get(f"{base}/root_ca.pem").content == root_first
        quote = httpx.get(f"{base}/attest/{REPORT_DATA.hex()}").content
        assert quote_ppid(parse_quote(quote)) == ppid_first


def test_a_restart_is_a_reboot_of_the_simulated_td(state_dir: Path) -> None:
    digest = hashlib.sha384(b"measured before the restart").digest()
    with sim_process(state_dir) as (base, _):
        response = httpx.post(f"{base}/rtmr/3/extend", json={"digest": digest.hex()})
        extended = bytes.fromhex(response.json()["value"])
        assert extended == hashlib.sha384(bytes(48) + digest).digest()
        before = httpx.get(f"{base}/rtmr").json()
        assert bytes.fromhex(before["rtmr3"]) == extended
        body = parse_quote(httpx.get(f"{base}/attest/{REPORT_DATA.hex()}").content).body
        assert body.rtmr3 == extended
    with sim_process(state_dir) as (base, _):
        after = httpx.get(f"{base}/rtmr").json()
        body = parse_quote(httpx.get(f"{base}/attest/{REPORT_DATA.hex()}").content).body
    assert after == {**before, "rtmr3": "00" * 48}
    assert body.rtmr3 == bytes(48)


def test_flags_change_the_quote(state_dir: Path) -> None:
    mr_td = "ab" * 48
    with sim_process(state_dir, "--debug-td", "--mrtd", mr_td) as (base, _):
        body = parse_quote(httpx.get(f"{base}/attest/{REPORT_DATA.hex()}").content).body
    assert body.debug
    assert body.mr_td == bytes.fromhex(mr_td)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stops_gracefully_on_signals(state_dir: Path, signum: int) -> None:
    with sim_process(state_dir) as (_, program):
        assert program.proc is not None
        program.proc.send_signal(signum)
        assert program.proc.wait(timeout=15) == 0
        output = program.log_path.read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, "expected JSON log lines"
    assert any(line["message"] == "simulated TDX platform ready" for line in lines)


def test_a_damaged_state_dir_fails_start_up_with_a_logged_reason(state_dir: Path) -> None:
    with sim_process(state_dir):
        pass
    key = state_dir / "pki" / "attestation.key"
    key.write_bytes(b"garbage")
    key.chmod(0o600)
    result = subprocess.run(
        [*TDX_SIM, "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["level"] == "ERROR"
    assert "attestation.key" in record["reason"]
