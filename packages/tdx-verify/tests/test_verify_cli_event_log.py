"""`verify-quote --event-log FILE`: the log must replay to the verified quote's RTMR3.

Quotes come from the synthetic PKI (`verify_world`), signed over a body whose RTMR3 is the replay
of a log built here, so everything but the log verifies."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from verify_world import NOW, World

from tdx_measure import BootEvent, EventLog, ExecutableEvent, WorkloadEvent
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


def sample_log() -> EventLog:
    log = EventLog(BootEvent(boot_nonce=bytes(range(32)), timestamp=1_800_000_000))
    log.append(
        ExecutableEvent(
            role="podman",
            path="/usr/bin/podman",
            sha384=hashlib.sha384(b"podman").digest(),
            build_id=b"\x11" * 20,
            machine="EM_X86_64",
        )
    )
    for transition in ("configure", "expose"):
        log.append(
            WorkloadEvent(
                transition=transition,
                image="registry.example/app:1",
                image_id="sha256:" + "ab" * 32,
                persist_dirs=("/data",),
                port=8080,
            )
        )
    return log


@dataclass(frozen=True)
class Files:
    quote: Path
    collateral: Path
    root_ca: Path
    log: EventLog
    dir: Path

    def argv(self, *extra: str, quote: Path | None = None) -> list[str]:
        return [
            "--quote", str(quote or self.quote), "--collateral", str(self.collateral),
            "--root-ca", str(self.root_ca), "--now", str(int(NOW.timestamp())), *extra,
        ]  # fmt: skip

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path


@pytest.fixture(scope="module")
def files(world: World, tmp_path_factory: pytest.TempPathFactory) -> Files:
    """A quote whose RTMR3 is `sample_log()`'s replay, its collateral and root, as files."""
    directory = tmp_path_factory.mktemp("event-log")
    log = sample_log()
    quote = directory / "quote.bin"
    quote.write_bytes(world.quote(rtmr3=log.replay()))
    collateral = directory / "collateral.json"
    collateral.write_text(world.collateral().to_json())
    root_ca = directory / "root.pem"
    root_ca.write_bytes(world.root_pem)
    return Files(quote, collateral, root_ca, log, directory)


def run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, out.getvalue()
    verdict: dict[str, Any] = json.loads(lines[0])
    return code, verdict


def test_matching_log_is_valid_and_reports_the_workload(files: Files) -> None:
    log_file = files.write("good.json", files.log.to_json())
    code, verdict = run(files.argv("--event-log", str(log_file)))
    assert code == 0, verdict
    assert set(verdict) == KEYS | {"event_log"}
    assert verdict["valid"] is True and verdict["error"] is None
    assert verdict["event_log"] == {
        "replayed_rtmr3": files.log.replay().hex(),
        "matches": True,
        "workload": {
            "transition": "expose",
            "image": "registry.example/app:1",
            "image_id": "sha256:" + "ab" * 32,
            "persist_dirs": ["/data"],
            "port": 8080,
        },
    }


def test_without_the_flag_the_output_is_unchanged(files: Files) -> None:
    code, verdict = run(files.argv())
    assert code == 0
    assert set(verdict) == KEYS


def test_without_tdx_measure_the_event_log_option_is_a_usage_error(
    files: Files, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """tdx-measure is the `event-log` extra: without it the option exits 2 with a message."""
    monkeypatch.setitem(sys.modules, "tdx_measure", None)
    log_file = files.write("extra.json", files.log.to_json())
    assert main(files.argv("--event-log", str(log_file))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "verify-quote: --event-log needs tdx-measure: pip install 'tdx-verify[event-log]'\n"
    )


def test_without_tdx_measure_a_quote_still_verifies(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tdx_measure", None)
    code, verdict = run(files.argv())
    assert code == 0 and verdict["valid"] is True


def test_importing_tdx_verify_and_its_cli_does_not_import_tdx_measure() -> None:
    program = (
        "import sys, tdx_verify, tdx_verify.cli\n"
        "assert 'tdx_measure' not in sys.modules, 'tdx_measure was imported'\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)


def test_log_of_another_boot_is_invalid(files: Files) -> None:
    other = EventLog(BootEvent(boot_nonce=b"\x01" * 32, timestamp=1_800_000_000))
    log_file = files.write("other.json", other.to_json())
    code, verdict = run(files.argv("--event-log", str(log_file)))
    assert code == 1
    assert verdict["valid"] is False
    assert verdict["error"].startswith("event log does not replay to the quote's RTMR3")
    assert verdict["tcb_status"] == "UpToDate"
    assert verdict["mr_td"] is None
    assert verdict["event_log"] == {
        "replayed_rtmr3": other.replay().hex(),
        "matches": False,
        "workload": None,
    }


def test_tampered_event_is_invalid(files: Files) -> None:
    document = json.loads(files.log.to_json())
    document["events"][3]["port"] = 9090
    document["events"][2]["port"] = 9090
    code, verdict = run(files.argv("--event-log", str(files.write("t.json", json.dumps(document)))))
    assert code == 1
    assert verdict["event_log"]["matches"] is False
    assert verdict["event_log"]["workload"]["port"] == 9090


def test_dropped_event_is_invalid(files: Files) -> None:
    document = json.loads(files.log.to_json())
    del document["events"][-1]
    code, verdict = run(files.argv("--event-log", str(files.write("d.json", json.dumps(document)))))
    assert code == 1
    assert verdict["event_log"]["matches"] is False
    assert verdict["event_log"]["workload"]["transition"] == "configure"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "malformed"),
        (b"{", "malformed"),
        (b"[]", "must be a JSON object"),
        (b"\xff\xfe", "malformed"),
        (b'{"events": [], "format": "tdx-measure/eventlog/v1"}', "boot event"),
        (b'{"events": [{"type": "boot", "boot_nonce": "AB", "timestamp": 1}], '
         b'"format": "tdx-measure/eventlog/v1"}', "boot_nonce"),
    ],
)  # fmt: skip
def test_malformed_log_is_invalid(files: Files, content: bytes, fragment: str) -> None:
    code, verdict = run(files.argv("--event-log", str(files.write("bad.json", content))))
    assert code == 1
    assert verdict["valid"] is False
    assert "event log" in verdict["error"] and fragment in verdict["error"]
    assert verdict["event_log"] is None


def test_unreadable_log_is_invalid(files: Files) -> None:
    code, verdict = run(files.argv("--event-log", str(files.dir / "missing.json")))
    assert code == 1
    assert "cannot read event log" in verdict["error"]
    assert verdict["event_log"] is None


def test_log_with_a_quote_that_fails_verification_never_matches(files: Files) -> None:
    """The replay is reported, but `matches` needs a verified RTMR3 to match against."""
    raw = bytearray(files.quote.read_bytes())
    raw[200] ^= 1  # inside the signed body: the quote signature no longer verifies
    broken = files.write("broken.bin", bytes(raw))
    log_file = files.write("good2.json", files.log.to_json())
    code, verdict = run(files.argv("--event-log", str(log_file), quote=broken))
    assert code == 1
    assert verdict["valid"] is False and "event log" not in verdict["error"]
    assert verdict["event_log"]["matches"] is False
    assert verdict["event_log"]["replayed_rtmr3"] == files.log.replay().hex()


@given(data=st.data())
def test_only_the_exact_event_sequence_is_valid(files: Files, data: st.DataObject) -> None:
    """Any subsequence in any order of the log's events: valid exactly when it is the log."""
    original = json.loads(files.log.to_json())["events"]
    chosen = data.draw(st.lists(st.sampled_from(range(len(original))), unique=True, max_size=5))
    events = [original[i] for i in chosen]
    document = {"format": "tdx-measure/eventlog/v1", "events": events}
    log_file = files.write("prop.json", json.dumps(document))
    code, verdict = run(files.argv("--event-log", str(log_file)))
    assert (code == 0) == (chosen == list(range(len(original))))
    assert verdict["valid"] is (code == 0)
