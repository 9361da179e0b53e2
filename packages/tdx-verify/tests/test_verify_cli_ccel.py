"""`verify-quote --ccel FILE`: the firmware's CCEL event log replayed against RTMR0-2.

The real Google Cloud CCEL (tests/vectors) is replayed against a quote from the synthetic PKI
(`verify_world`) whose RTMR0-3 are the real Google Cloud quote's, so the quote verifies for
real; the real Google Cloud quote itself has no recorded collateral and never verifies."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from verify_world import NOW, World

from tdx_quote import parse_quote
from tdx_verify.cli import main
from tests.vectors import GCP_CCEL, GCP_QUOTE, read_vector, vector_path

GCP_KERNEL = "/syslinux/vmlinuz.A"


def gcp_rtmrs() -> tuple[bytes, bytes, bytes, bytes]:
    return parse_quote(read_vector(GCP_QUOTE), allow_zero_padding=True).body.rtmrs


class Files:
    def __init__(self, world: World, directory: Path) -> None:
        self.dir = directory
        self.collateral = self.write("collateral.json", world.collateral().to_json().encode())
        self.root_ca = self.write("root.pem", world.root_pem)
        r0, r1, r2, r3 = gcp_rtmrs()
        self.quote = self.write("quote.bin", world.quote(rtmr0=r0, rtmr1=r1, rtmr2=r2, rtmr3=r3))
        self.world = world

    def write(self, name: str, content: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(content)
        return path

    def argv(self, *extra: str, quote: Path | None = None) -> list[str]:
        return [
            "--quote", str(quote or self.quote), "--collateral", str(self.collateral),
            "--root-ca", str(self.root_ca), "--now", str(int(NOW.timestamp())), *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def files(world: World, tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(world, tmp_path_factory.mktemp("ccel"))


def run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, out.getvalue()
    verdict: dict[str, Any] = json.loads(lines[0])
    return code, verdict


def test_the_real_ccel_replays_to_a_verified_quote_with_the_real_rtmrs(files: Files) -> None:
    code, verdict = run(files.argv("--ccel", str(vector_path(GCP_CCEL))))
    assert code == 0, verdict
    assert verdict["valid"] is True and verdict["error"] is None
    ccel = verdict["ccel"]
    assert ccel["events"] == 43
    assert ccel["quote_verified"] is True and ccel["matches"] is True
    rtmrs = gcp_rtmrs()
    assert [(r["rtmr"], r["quote"], r["compared"], r["equal"]) for r in ccel["replay"]] == [
        (i, rtmrs[i].hex(), i < 3, True) for i in range(4)
    ]
    assert [r["log"] for r in ccel["replay"][:3]] == [r.hex() for r in rtmrs[:3]]
    components = ccel["components"]
    assert components["kernel"]["path"] == GCP_KERNEL
    assert components["cmdline"]["text"].startswith(GCP_KERNEL + " init=/usr/lib/systemd/systemd")
    assert components["cmdline"]["sha384"] == (
        hashlib.sha384(components["cmdline"]["text"].encode()).hexdigest()
    )
    assert components["initrds"] == []
    assert [b["path"] for b in components["boot_loaders"]] == [
        "\\EFI\\BOOT\\BOOTX64.EFI",
        "\\EFI\\BOOT\\grub-lakitu.efi",
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_verified_quote_with_another_rtmr_is_invalid(files: Files, index: int) -> None:
    rtmrs = list(gcp_rtmrs())
    rtmrs[index] = hashlib.sha384(b"another boot").digest()
    quote = files.write(
        f"other{index}.bin",
        files.world.quote(rtmr0=rtmrs[0], rtmr1=rtmrs[1], rtmr2=rtmrs[2], rtmr3=rtmrs[3]),
    )
    code, verdict = run(files.argv("--ccel", str(vector_path(GCP_CCEL)), quote=quote))
    assert code == 1
    assert verdict["valid"] is False
    assert verdict["error"] == f"the CCEL event log does not replay to the quote's RTMR{index}"
    assert verdict["tcb_status"] == "UpToDate"
    assert verdict["ccel"]["matches"] is False
    assert [r["equal"] for r in verdict["ccel"]["replay"][:3]] == [i != index for i in range(3)]


def test_the_real_unverified_quote_shows_the_replay_but_never_matches(files: Files) -> None:
    """The real Google Cloud quote does not verify (no collateral of its platform): the replay
    is compared with its RTMRs, which are equal, but the verdict is invalid."""
    code, verdict = run(
        files.argv("--ccel", str(vector_path(GCP_CCEL)), quote=vector_path(GCP_QUOTE))
    )
    assert code == 1
    assert verdict["valid"] is False and "CCEL" not in verdict["error"]
    ccel = verdict["ccel"]
    assert ccel["quote_verified"] is False and ccel["matches"] is False
    assert [r["equal"] for r in ccel["replay"][:3]] == [True, True, True]
    assert ccel["components"]["kernel"]["path"] == GCP_KERNEL


def test_a_quote_that_does_not_parse_still_shows_the_logs_replay(files: Files) -> None:
    code, verdict = run(
        files.argv("--ccel", str(vector_path(GCP_CCEL)), quote=files.write("q.bin", b"junk"))
    )
    assert code == 1
    assert verdict["ccel"]["matches"] is False
    assert [r["quote"] for r in verdict["ccel"]["replay"]] == [None] * 4
    assert verdict["ccel"]["replay"][0]["log"] == gcp_rtmrs()[0].hex()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "Spec ID"),
        (read_vector(GCP_CCEL)[:5000], "remain"),
        (b"\xff" * 64, "Spec ID"),
    ],
)
def test_a_malformed_ccel_is_invalid(files: Files, content: bytes, fragment: str) -> None:
    code, verdict = run(files.argv("--ccel", str(files.write("bad.bin", content))))
    assert code == 1
    assert verdict["valid"] is False
    assert verdict["error"].startswith("CCEL event log") and fragment in verdict["error"]
    assert verdict["ccel"] is None


def test_an_unreadable_ccel_is_invalid(files: Files) -> None:
    code, verdict = run(files.argv("--ccel", str(files.dir / "missing.bin")))
    assert code == 1
    assert "cannot read CCEL event log" in verdict["error"]
    assert verdict["ccel"] is None


def test_without_tdx_measure_the_ccel_option_is_a_usage_error(
    files: Files, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tdx_measure", None)
    assert main(files.argv("--ccel", str(vector_path(GCP_CCEL)))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "verify-quote: --ccel needs tdx-measure: pip install 'tdx-verify[event-log]'\n"
    )
