"""Run each test suite of the monorepo in its own pytest process, then summarize.

Every library and app has its own `tests/` directory (as a published distribution would), so
each is collected on its own; `tests/` at the root holds the end-to-end tests. Arguments are
passed to every pytest run, e.g. `-k registry` or `-x`. A suite that collects no tests fails,
unless a `-k` filter was given (a filter may select nothing in some suites).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Suites whose outcome depends on the registry's storage backend. The PostgreSQL cell of the
# hatch matrix runs only these: the registry's and the key broker's own tests and the
# registration flow end to end; the libraries and the other apps never touch the database.
BACKEND_SUITES = (
    "apps/registry/tests",
    "apps/key-broker/tests",
    "tests/test_registration_flow.py",
)


def suites() -> list[Path]:
    found = sorted(p for p in ROOT.glob("packages/*/tests") if p.is_dir())
    found += sorted(p for p in ROOT.glob("apps/*/tests") if p.is_dir())
    found.append(ROOT / "tests")
    if os.environ.get("REGISTRY_TEST_BACKEND") == "postgres":
        found = [ROOT / suite for suite in BACKEND_SUITES]
    return found


# pytest's exit status when it collected no tests.
NO_TESTS_COLLECTED = 5


def has_k_filter(argv: list[str]) -> bool:
    """Whether the pytest arguments carry a `-k` expression (`-k EXPR`, `-kEXPR`, `-k=EXPR`)."""
    return any(arg.startswith("-k") for arg in argv)


def suite_ok(rc: int, k_filter: bool) -> bool:
    """A suite passes on exit 0; on "no tests collected" only when a `-k` filter was given."""
    return rc == 0 or (k_filter and rc == NO_TESTS_COLLECTED)


def main(argv: list[str]) -> int:
    k_filter = has_k_filter(argv)
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
        if rc == NO_TESTS_COLLECTED:
            status = "ok (no test selected)" if k_filter else "FAILED (no tests collected)"
        else:
            status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"{name:32} {seconds:7.1f}s  {status}")
    return 0 if all(suite_ok(rc, k_filter) for _, rc, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
