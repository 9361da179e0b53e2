"""scripts/run_tests.py: a suite that collects nothing fails, unless a `-k` filter was given."""

from __future__ import annotations

import pytest

from scripts.run_tests import NO_TESTS_COLLECTED, has_k_filter, suite_ok


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], False),
        (["-q", "-x"], False),
        (["-k", "registry"], True),
        (["-kregistry"], True),
        (["-q", "-k=registry and not slow"], True),
    ],
)
def test_k_filter_is_recognised(argv: list[str], expected: bool) -> None:
    assert has_k_filter(argv) is expected


def test_no_tests_collected_fails_without_a_k_filter() -> None:
    assert not suite_ok(NO_TESTS_COLLECTED, k_filter=False)


def test_no_tests_collected_passes_with_a_k_filter() -> None:
    assert suite_ok(NO_TESTS_COLLECTED, k_filter=True)


@pytest.mark.parametrize("k_filter", [False, True])
def test_exit_zero_passes_and_a_failure_fails(k_filter: bool) -> None:
    assert suite_ok(0, k_filter)
    assert not suite_ok(1, k_filter)
    assert not suite_ok(2, k_filter)
