"""scripts/run_tests.py: a suite that collects nothing fails, unless a `-k` filter was given."""

from __future__ import annotations

import pytest

from scripts.run_tests import (
    BACKEND_SUITES,
    NO_TESTS_COLLECTED,
    ROOT,
    ScopeError,
    has_k_filter,
    suite_ok,
    suites,
)


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


def test_every_suite_runs_by_default_the_end_to_end_one_last() -> None:
    found = suites({})
    assert found[-1] == ROOT / "tests"
    assert ROOT / "apps/key-broker/tests" in found
    assert ROOT / "packages/kbs-protocol/tests" in found


def test_test_e2e_0_leaves_out_only_the_end_to_end_suite() -> None:
    assert suites({"TEST_E2E": "0"}) == suites({})[:-1]
    assert suites({"TEST_E2E": "1"}) == suites({})


def test_the_postgres_cell_runs_the_backend_suites() -> None:
    found = suites({"REGISTRY_TEST_BACKEND": "postgres", "TEST_E2E": "0"})
    assert found == [ROOT / suite for suite in BACKEND_SUITES]


@pytest.mark.parametrize("value", ["", "yes", "true", "2"])
def test_any_other_test_e2e_value_is_refused(value: str) -> None:
    with pytest.raises(ScopeError):
        suites({"TEST_E2E": value})
