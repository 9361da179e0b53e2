"""Start-up: a clear one-line failure without a quote source, and the real program's CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdx_identity import Settings, create_app
from tdx_identity.core.instance_key import KEY_FILE_NAME
from tdx_identity.exceptions import NoQuoteSourceError


def test_create_app_without_a_quote_source_raises_a_startup_error(tmp_path: Path) -> None:
    settings = Settings(storage_path=tmp_path / "s", configfs_tsm_path=tmp_path / "absent")
    with pytest.raises(NoQuoteSourceError):
        create_app(settings)


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MOCK_TDX_URL", "STORAGE_PATH")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "tdx_identity.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_cli_without_a_quote_source_exits_non_zero_with_one_log_line(tmp_path: Path) -> None:
    result = run_cli(
        "--storage-path", str(tmp_path / "s"), "--configfs-tsm-path", str(tmp_path / "absent")
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    record = json.loads(lines[0])
    assert record["level"] == "ERROR"
    assert "MOCK_TDX_URL" in record["message"]
    assert "Traceback" not in result.stderr and "traceback" not in record


def test_cli_with_a_corrupt_key_exits_non_zero_and_keeps_the_file(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    storage.mkdir()
    key = storage / KEY_FILE_NAME
    key.write_bytes(b"not a key")
    key.chmod(0o600)
    result = run_cli("--storage-path", str(storage), env_extra={"MOCK_TDX_URL": "http://x"})
    assert result.returncode == 1
    assert "corrupt" in result.stderr and "Traceback" not in result.stderr
    assert key.read_bytes() == b"not a key"


def test_cli_with_an_unreachable_mock_tdx_fails_clearly(tmp_path: Path) -> None:
    result = run_cli(
        "--storage-path",
        str(tmp_path / "s"),
        "--configfs-tsm-path",
        str(tmp_path / "absent"),
        "--mock-tdx-url",
        "http://127.0.0.1:9",
    )
    assert result.returncode == 1
    assert "PPID" in result.stderr and "Traceback" not in result.stderr
