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
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Suites whose outcome depends on the registry's storage backend. The PostgreSQL cell of the
# hatch matrix runs only these: the registry's and the key broker's own tests, and end to end
# the registration flow, the replicas' audited log, their conflicting writes and the short soak
# (a replica killed, PostgreSQL restarted, under load; it starts a cluster of its own, so it
# runs in the SQLite cell too); the libraries and the other apps never touch the database.
BACKEND_SUITES = (
    "apps/registry/tests",
    "apps/key-broker/tests",
    "tests/test_registration_flow.py",
    "tests/test_registry_audit_flow.py",
    "tests/test_registry_replicas.py",
    "tests/test_registry_soak.py",
)


# The end-to-end suite (`tests/`, the real programs on loopback) runs on one Python of the
# matrix: `TEST_E2E=0` leaves it out of a cell (the hatch matrix sets it for 3.11 and 3.13,
# whose cells run every library's and app's own suite). Anything but "0" or unset is an error.
E2E_ENV = "TEST_E2E"


class ScopeError(ValueError):
    """An environment that names no known test scope."""


def e2e_enabled(environ: Mapping[str, str]) -> bool:
    value = environ.get(E2E_ENV)
    if value is None or value == "1":
        return True
    if value == "0":
        return False
    raise ScopeError(f"{E2E_ENV} must be 0 or 1, not {value!r}")


def suites(environ: Mapping[str, str] = os.environ) -> list[Path]:
    if environ.get("REGISTRY_TEST_BACKEND") == "postgres":
        return [ROOT / suite for suite in BACKEND_SUITES]
    found = sorted(p for p in ROOT.glob("packages/*/tests") if p.is_dir())
    found += sorted(p for p in ROOT.glob("apps/*/tests") if p.is_dir())
    if e2e_enabled(environ):
        found.append(ROOT / "tests")
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
    try:
        selected = suites()
    except ScopeError as exc:
        print(f"run_tests: {exc}", file=sys.stderr)
        return 2
    if not e2e_enabled(os.environ) and os.environ.get("REGISTRY_TEST_BACKEND") != "postgres":
        print(f"run_tests: {E2E_ENV}=0: the end-to-end suite (tests/) runs in another cell")
    results: list[tuple[str, int, float]] = []
    for suite in selected:
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
