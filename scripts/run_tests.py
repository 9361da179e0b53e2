"""Run each test suite of the monorepo in its own pytest process, then summarize.

Every library and app has its own `tests/` directory (as a published distribution would), so
each is collected on its own; `tests/` at the root holds the end-to-end tests. Arguments are
passed to every pytest run, e.g. `-k registry` or `-x`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Suites whose outcome depends on the registry's storage backend. The PostgreSQL cell of the
# hatch matrix runs only these: the registry's own store tests and the registration flow
# end to end; the libraries and the other apps never touch the database.
BACKEND_SUITES = ("apps/registry/tests", "tests/test_registration_flow.py")


def suites() -> list[Path]:
    found = sorted(p for p in ROOT.glob("packages/*/tests") if p.is_dir())
    found += sorted(p for p in ROOT.glob("apps/*/tests") if p.is_dir())
    found.append(ROOT / "tests")
    if os.environ.get("REGISTRY_TEST_BACKEND") == "postgres":
        found = [ROOT / suite for suite in BACKEND_SUITES]
    return found


def main(argv: list[str]) -> int:
    results: list[tuple[str, int, float]] = []
    for suite in suites():
        name = str(suite.relative_to(ROOT))
        print(f"\n=== {name}", flush=True)
        start = time.monotonic()
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "--rootdir", str(ROOT), str(suite), *argv],
            cwd=ROOT,
        )
        results.append((name, rc, time.monotonic() - start))
    print("\n=== summary")
    for name, rc, seconds in results:
        # 5 = no tests collected (e.g. a -k filter that selects nothing in this suite)
        status = "ok" if rc in (0, 5) else f"FAILED (exit {rc})"
        print(f"{name:32} {seconds:7.1f}s  {status}")
    return 0 if all(rc in (0, 5) for _, rc, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
