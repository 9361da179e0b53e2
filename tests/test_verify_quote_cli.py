"""The installed `verify-quote` command (and `tdx-registry verify-quote`) against a real running
`tdx-sim`: collateral from its PCCS routes or from a file, quotes raw or as hex text."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tdx_sim import SimOptions, SimPlatform
from tests import procs
from tests.procs import Program

pytestmark = pytest.mark.e2e

REPORT_DATA = bytes.fromhex("c0ffee" * 21 + "00")
SIM_ADVISORY = "INTEL-SA-00000"


@dataclass(frozen=True)
class RunningSim:
    program: Program
    state_dir: Path
    root_ca: Path
    quote_file: Path

    @property
    def ppid(self) -> bytes:
        """The PPID in the sim's PCK certificate, read from its state directory."""
        return SimPlatform(self.state_dir, SimOptions()).ppid


def _start(tmp: Path, flags: list[str]) -> Iterator[RunningSim]:
    program = procs.sim(tmp, flags)
    with procs.running(program):
        quote = httpx.get(f"{program.url}/attest/{REPORT_DATA.hex()}", timeout=10.0)
        assert quote.status_code == 200, quote.text
        quote_file = tmp / "quote.bin"
        quote_file.write_bytes(quote.content)
        state_dir = tmp / "sim-state"
        yield RunningSim(program, state_dir, state_dir / "root_ca.pem", quote_file)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    yield from _start(tmp_path_factory.mktemp("sim"), [])


@pytest.fixture(scope="module")
def out_of_date_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    yield from _start(tmp_path_factory.mktemp("sim-ood"), ["--tcb-status", "OutOfDate"])


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def verdict(self) -> dict[str, Any]:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, self.stdout
        value: dict[str, Any] = json.loads(lines[0])
        assert set(value) == {
            "valid",
            "tcb_status",
            "advisory_ids",
            "mr_td",
            "report_data",
            "ppid",
            "tcb_grace_until",
            "error",
        }
        return value


def run(*args: str | Path, command: tuple[str, ...] = ("verify-quote",)) -> Run:
    argv = [procs.program(command[0]), *command[1:], *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=procs.base_env())
    assert "Traceback" not in done.stderr, done.stderr
    return Run(done.returncode, done.stdout, done.stderr)


def assert_valid_up_to_date(result: Run, sim: RunningSim) -> None:
    assert result.code == 0, (result.stdout, result.stderr)
    verdict = result.verdict
    assert verdict["valid"] is True
    assert verdict["tcb_status"] == "UpToDate"
    assert verdict["advisory_ids"] == []
    assert verdict["ppid"] == sim.ppid.hex()
    assert verdict["report_data"] == REPORT_DATA.hex()
    assert verdict["error"] is None


def test_pccs_url_and_sim_root_give_a_valid_verdict(sim: RunningSim) -> None:
    result = run("--quote", sim.quote_file, "--pccs-url", sim.program.url, "--root-ca", sim.root_ca)
    assert_valid_up_to_date(result, sim)


def test_collateral_file_gives_the_same_verdict(sim: RunningSim, tmp_path: Path) -> None:
    collateral = SimPlatform(sim.state_dir, SimOptions()).collateral(datetime.now(UTC))
    collateral_file = tmp_path / "collateral.json"
    collateral_file.write_text(json.dumps(collateral))
    result = run(
        "--quote", sim.quote_file, "--collateral", collateral_file, "--root-ca", sim.root_ca
    )
    assert_valid_up_to_date(result, sim)


def test_a_hex_text_quote_file_is_read_as_the_quote(sim: RunningSim, tmp_path: Path) -> None:
    hex_file = tmp_path / "quote.hex"
    hex_file.write_text(sim.quote_file.read_bytes().hex() + "\n")
    result = run("--quote", hex_file, "--pccs-url", sim.program.url, "--root-ca", sim.root_ca)
    assert_valid_up_to_date(result, sim)


def test_out_of_date_tcb_is_invalid_by_default_and_valid_when_any_status_is_accepted(
    out_of_date_sim: RunningSim,
) -> None:
    common = (
        "--quote",
        out_of_date_sim.quote_file,
        "--pccs-url",
        out_of_date_sim.program.url,
        "--root-ca",
        out_of_date_sim.root_ca,
    )
    refused = run(*common)
    assert refused.code == 1, refused.stdout
    assert refused.verdict["valid"] is False
    assert refused.verdict["tcb_status"] == "OutOfDate"
    assert refused.verdict["advisory_ids"] == [SIM_ADVISORY]
    assert "OutOfDate" in refused.verdict["error"]

    accepted = run(*common, "--accept-tcb-status", "any")
    assert accepted.code == 0, accepted.stdout
    assert accepted.verdict["valid"] is True
    assert accepted.verdict["tcb_status"] == "OutOfDate"
    assert accepted.verdict["advisory_ids"] == [SIM_ADVISORY]
    assert accepted.verdict["ppid"] == out_of_date_sim.ppid.hex()


def test_without_root_ca_intels_root_is_trusted_and_the_sim_quote_is_invalid(
    sim: RunningSim,
) -> None:
    result = run("--quote", sim.quote_file, "--pccs-url", sim.program.url)
    assert result.code == 1, result.stdout
    verdict = result.verdict
    assert verdict["valid"] is False
    assert verdict["error"].startswith(("root_ca:", "pck_chain:"))
    assert verdict["ppid"] is None


@pytest.mark.parametrize(
    "content",
    [b"", b"not a quote at all", b"\x04\x00\x02\x00" + bytes(700), b"abc", b"\xff" * 5000],
    ids=["empty", "text", "zero_body", "odd_hex", "binary"],
)
def test_a_garbage_quote_file_is_invalid_with_an_error_and_no_traceback(
    sim: RunningSim, tmp_path: Path, content: bytes
) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(content)
    result = run("--quote", garbage, "--pccs-url", sim.program.url, "--root-ca", sim.root_ca)
    assert result.code == 1, result.stdout
    assert result.verdict["valid"] is False
    assert result.verdict["error"]


def test_a_quote_with_a_malformed_pck_certificate_is_invalid_with_no_traceback(
    sim: RunningSim, tmp_path: Path
) -> None:
    """The PCK leaf's X.509 version INTEGER set to 5 (same length, so every size still holds)."""
    quote = sim.quote_file.read_bytes()
    marker = b"-----BEGIN CERTIFICATE-----\n"
    start = quote.index(marker) + len(marker)
    # The first 20 base64 characters decode to the DER prefix 30 82 .. .. 30 82 .. .. a0 03 02 01
    # 02 ..: re-encode it with the version changed.
    head = bytearray(base64.b64decode(quote[start : start + 20]))
    assert head[8:13] == bytes.fromhex("a003020102")
    head[12] = 5
    mutated = quote[:start] + base64.b64encode(bytes(head)) + quote[start + 20 :]
    bad = tmp_path / "bad-version.bin"
    bad.write_bytes(mutated)
    result = run("--quote", bad, "--pccs-url", sim.program.url, "--root-ca", sim.root_ca)
    assert result.code == 1, result.stdout
    assert result.verdict["valid"] is False
    assert result.verdict["error"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--quote", "q.bin"],
        ["--quote", "q.bin", "--collateral", "c.json", "--pccs-url", "http://127.0.0.1:1"],
        ["--quote", "q.bin", "--collateral", "c.json", "--accept-tcb-status", "Bogus"],
        ["--quote", "q.bin", "--collateral", "c.json", "--now", "yesterday"],
        ["--no-such-option"],
    ],
    ids=["nothing", "no_source", "two_sources", "unknown_status", "bad_now", "unknown_option"],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "usage:" in result.stderr


def test_tdx_registry_verify_quote_is_the_same_command(sim: RunningSim) -> None:
    result = run(
        "--quote",
        sim.quote_file,
        "--pccs-url",
        sim.program.url,
        "--root-ca",
        sim.root_ca,
        command=("tdx-registry", "verify-quote"),
    )
    assert_valid_up_to_date(result, sim)
    usage = run(command=("tdx-registry", "verify-quote"))
    assert usage.code == 2, (usage.stdout, usage.stderr)
