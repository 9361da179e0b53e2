"""The fuzz harnesses (fuzz/) without atheris: every input of every committed corpus, the seeds
and the kept findings, goes through its harness with no finding; `scripts/fuzz`'s reading of
libFuzzer's log. (`scripts/test` also runs each harness under atheris for a few seconds.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.harnesses import MODULES, UnknownHarness, load
from fuzz.run import SEEDS, parse_output

CORPUS_LIMIT = 2 * 1024 * 1024


def test_every_harness_has_a_corpus_and_the_corpora_stay_small() -> None:
    total = 0
    for name in MODULES:
        files = [p for p in (SEEDS / name).iterdir() if p.is_file()]
        assert files, f"fuzz/corpus/{name} is empty"
        total += sum(p.stat().st_size for p in files)
    assert total < CORPUS_LIMIT


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_corpus_input_runs_without_a_finding(name: str) -> None:
    harness = load(name)
    accepted = 0
    for path in sorted(Path(SEEDS / name).iterdir()):
        accepted += harness.run(path.read_bytes())  # a finding raises
    assert accepted, f"no input of fuzz/corpus/{name} is accepted: the seeds reach nothing"


def test_an_unknown_harness_is_refused() -> None:
    with pytest.raises(UnknownHarness):
        load("nope")


def test_libfuzzer_log_is_read() -> None:
    log = (
        "#2\tINITED cov: 10 ft: 10 corp: 1/5006b exec/s: 0 rss: 56Mb\n"
        "#912507\tDONE   cov: 103 ft: 178 corp: 22/48Kb lim: 13923 exec/s: 6043 rss: 55Mb\n"
        "artifact_prefix='/x/'; Test unit written to /x/crash-abc\n"
        "stat::number_of_executed_units: 912510\n"
    )
    outcome = parse_output("quote", log, 1, 2.0)
    assert (outcome.executions, outcome.coverage, outcome.features, outcome.corpus) == (
        912510,
        103,
        178,
        22,
    )
    assert outcome.findings == ("/x/crash-abc",)
    assert not outcome.ok
