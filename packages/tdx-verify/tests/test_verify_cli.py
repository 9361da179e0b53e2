"""`verify-quote`: one JSON object on stdout, exit 0 valid / 1 invalid / 2 usage."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from verify_vectors import COLLATERAL_PATH, QUOTE_PATH, VECTOR_NOW_TS
from verify_world import NOW

from tdx_verify.cli import main

KEYS = {
    "valid",
    "tcb_status",
    "advisory_ids",
    "mr_td",
    "report_data",
    "ppid",
    "tcb_grace_until",
    "error",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    verdict = json.loads(lines[0])
    assert set(verdict) == KEYS
    return code, verdict


def base(quote: Path | str = QUOTE_PATH, collateral: Path | str = COLLATERAL_PATH) -> list[str]:
    return ["--quote", str(quote), "--collateral", str(collateral), "--now", str(VECTOR_NOW_TS)]


def test_valid_quote_exits_0(capsys: pytest.CaptureFixture[str], real_quote: bytes) -> None:
    code, verdict = run(capsys, *base())
    assert code == 0
    assert verdict["valid"] is True and verdict["error"] is None
    assert verdict["tcb_status"] == "UpToDate" and verdict["advisory_ids"] == []
    assert verdict["ppid"] == "811dca2a26b952e85bb6448b097ba4fd"
    assert isinstance(verdict["mr_td"], str) and len(verdict["mr_td"]) == 96
    assert isinstance(verdict["report_data"], str) and len(verdict["report_data"]) == 128


def test_hex_text_quote_is_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, real_quote: bytes
) -> None:
    hex_file = tmp_path / "quote.hex"
    hex_file.write_text(real_quote.hex() + "\n")
    code, verdict = run(capsys, *base(quote=hex_file))
    assert (code, verdict["valid"]) == (0, True)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"\x00" * 100, b"zz", b"\xff" * 5000, b"0" * 11]
)
def test_garbage_quote_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, real_quote: bytes
) -> None:
    path = tmp_path / "q"
    path.write_bytes(content)
    code, verdict = run(capsys, *base(quote=path))
    assert code == 1 and verdict["valid"] is False and verdict["error"]


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"tcb_info": 1}', b"\xff\xfe", b'{"pck_crl": "zz"}']
)
def test_bad_collateral_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, real_quote: bytes
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    code, verdict = run(capsys, *base(collateral=path))
    assert code == 1 and "collateral" in str(verdict["error"])


def test_unreadable_files_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, verdict = run(capsys, *base(quote=tmp_path / "missing"))
    assert code == 1 and "cannot read quote" in str(verdict["error"])
    code, verdict = run(capsys, *base(quote=tmp_path))  # a directory
    assert code == 1


def test_expired_collateral_exits_1_naming_the_item(
    capsys: pytest.CaptureFixture[str], real_quote: bytes
) -> None:
    argv = base()
    argv[-1] = str(VECTOR_NOW_TS + 1)
    code, verdict = run(capsys, *argv)
    assert code == 1 and "PCK CRL expired" in str(verdict["error"])


def test_tcb_status_not_accepted_exits_1_and_reports_it(
    capsys: pytest.CaptureFixture[str], real_quote: bytes
) -> None:
    code, verdict = run(capsys, *base(), "--accept-tcb-status", "OutOfDate,Revoked")
    assert code == 1 and verdict["tcb_status"] == "UpToDate"
    code, verdict = run(capsys, *base(), "--accept-tcb-status", "any")
    assert code == 0


def test_other_root_ca_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: object
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(world.root_pem)  # type: ignore[attr-defined]
    code, verdict = run(capsys, *base(), "--root-ca", str(root))
    assert code == 1
    bad = tmp_path / "bad.pem"
    bad.write_text("not a pem")
    code, verdict = run(capsys, *base(), "--root-ca", str(bad))
    assert code == 1 and "root CA" in str(verdict["error"])


def test_unreachable_pccs_exits_1(capsys: pytest.CaptureFixture[str], real_quote: bytes) -> None:
    code, verdict = run(
        capsys,
        "--quote",
        str(QUOTE_PATH),
        "--pccs-url",
        "http://127.0.0.1:9",
        "--now",
        str(VECTOR_NOW_TS),
    )
    assert code == 1 and verdict["error"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--quote", "q"],
        ["--quote", "q", "--collateral", "c", "--pccs-url", "u"],
        ["--quote", "q", "--collateral", "c", "--now", "soon"],
        ["--quote", "q", "--collateral", "c", "--accept-tcb-status", "Great"],
        ["--quote", "q", "--collateral", "c", "--tcb-grace-days", "0"],
        ["--quote", "q", "--collateral", "c", "--tcb-grace-days", "366"],
        ["--quote", "q", "--collateral", "c", "--tcb-grace-days", "soon"],
        ["--quote", "q", "--collateral", "c", "--deny-advisory", "CVE-2024-0001"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


def _recovered_world(world: Any, tmp_path: Path, recovery: datetime) -> list[str]:
    """Files of a synthetic quote whose platform a newer TCB level, dated `recovery`, put out of
    date (advisory INTEL-SA-01001), and the flags that verify it at the world's NOW."""
    info = world.tcb_info_dict()
    newer = copy.deepcopy(info["tcbLevels"][0])
    newer["tcb"]["pcesvn"] = 200
    newer["tcbDate"] = recovery.strftime("%Y-%m-%dT%H:%M:%SZ")
    info["tcbLevels"][0]["tcbStatus"] = "OutOfDate"
    info["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-01001"]
    info["tcbLevels"].insert(0, newer)
    paths = {name: tmp_path / name for name in ("quote.bin", "collateral.json", "root.pem")}
    paths["quote.bin"].write_bytes(world.quote())
    paths["collateral.json"].write_text(world.collateral(tcb_info=info).to_json())
    paths["root.pem"].write_bytes(world.root_pem)
    return [
        "--quote",
        str(paths["quote.bin"]),
        "--collateral",
        str(paths["collateral.json"]),
        "--root-ca",
        str(paths["root.pem"]),
        "--now",
        str(int(NOW.timestamp())),
    ]


def test_tcb_grace_days_accepts_a_recently_outdated_platform(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: Any
) -> None:
    argv = _recovered_world(world, tmp_path, NOW - timedelta(days=10))
    code, verdict = run(capsys, *argv)
    assert code == 1 and verdict["tcb_status"] == "OutOfDate" and verdict["tcb_grace_until"] is None
    code, verdict = run(capsys, *argv, "--tcb-grace-days", "30")
    assert code == 0 and verdict["valid"] is True
    assert verdict["tcb_status"] == "OutOfDate"
    assert verdict["tcb_grace_until"] == "2025-07-21T12:00:00Z"
    code, verdict = run(capsys, *argv, "--tcb-grace-days", "10")
    assert code == 1 and "10-day grace ended at 2025-07-01T12:00:00Z" in str(verdict["error"])


def test_deny_advisory_refuses_and_reports_the_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: Any
) -> None:
    argv = _recovered_world(world, tmp_path, NOW - timedelta(days=10))
    grace = ["--tcb-grace-days", "30"]
    code, verdict = run(capsys, *argv, *grace, "--deny-advisory", "INTEL-SA-00002")
    assert code == 0
    code, verdict = run(
        capsys,
        *argv,
        *grace,
        "--deny-advisory",
        "INTEL-SA-00002",
        "--deny-advisory",
        "intel-sa-01001",
    )
    assert code == 1
    assert verdict["tcb_status"] == "OutOfDate" and verdict["advisory_ids"] == ["INTEL-SA-01001"]
    assert "denied advisories: INTEL-SA-01001" in str(verdict["error"])
