"""The README's first command: `scripts/demo` runs every service on its embedded defaults (the
owner's key broker included) and the whole flow from operator to exposed workload through
`tdxctl`, the store key released by the broker. This runs the same script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_runs_the_whole_flow_through_tdxctl(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--workdir", str(tmp_path / "demo")],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for command in (
        "$ tdxctl keygen",
        "$ tdxctl operator register",
        "$ tdxctl owner register",
        "$ tdxctl verify",
        "$ tdxctl registry audit",
        "$ tdxctl kbs set-policy",
        "$ tdxctl kbs put-key",
        "$ tdxctl workload configure",
        "$ tdxctl ssh",
        "$ tdxctl workload expose",
    ):
        assert command in out, out
    assert "==> tdx-kbs is up (127.0.0.1:3020)" in out, out
    assert "serves 'hello from the owner'" in out, out
    assert "SSH setup access closed: True" in out, out
    assert "the log is consistent with the first audit: True" in out, out
    # The identity service took its store key from the broker, not from a local file.
    identity_log = (tmp_path / "demo" / "identity.log").read_text()
    assert "the store key comes from the owner's key broker" in identity_log
    assert "UNPROTECTED STORE KEY" not in identity_log
