"""Run fuzz harnesses on their corpora, one process at a time, and summarize each.

`python -m fuzz.run [--seconds N] [HARNESS...]` (what `scripts/fuzz` runs in the fuzz hatch
environment). Each harness runs `python -m fuzz NAME` for N seconds with libFuzzer's 1 s
timeout; its seeds are fuzz/corpus/NAME/ (read, never written), the inputs it finds go to
.fuzz/NAME/corpus/ and its crashes and hangs to .fuzz/NAME/findings/. `--replay` runs each
corpus once, without mutating. Exit status 1 when any harness had a finding.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fuzz.harnesses import MODULES

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "corpus"
WORK = ROOT / ".fuzz"
TIMEOUT_SECONDS = 1
MAX_LEN = 65536

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.M)
_EXECUTED = re.compile(r"^stat::number_of_executed_units: (\d+)$", re.M)
_ARTIFACT = re.compile(r"^artifact_prefix='.*'; Test unit written to (\S+)$", re.M)


@dataclass(frozen=True)
class Outcome:
    name: str
    executions: int
    coverage: int
    features: int
    corpus: int
    findings: tuple[str, ...]
    seconds: float
    returncode: int

    @property
    def ok(self) -> bool:
        return not self.findings and self.returncode == 0


def parse_output(name: str, text: str, returncode: int, seconds: float) -> Outcome:
    """Read libFuzzer's log: the last status line, the final stats, the artifacts written."""
    statuses = _STATUS.findall(text)
    execs, cov, ft, corp = (int(v) for v in statuses[-1]) if statuses else (0, 0, 0, 0)
    executed = _EXECUTED.findall(text)
    if executed:
        execs = int(executed[-1])
    return Outcome(name, execs, cov, ft, corp, tuple(_ARTIFACT.findall(text)), seconds, returncode)


def command(name: str, seconds: int, *, replay: bool) -> list[str]:
    work = WORK / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "findings").mkdir(parents=True, exist_ok=True)
    flags = [
        f"-timeout={TIMEOUT_SECONDS}",
        f"-max_len={MAX_LEN}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={work / 'findings'}/",
    ]
    if replay:
        flags.append("-runs=0")
    else:
        flags.append(f"-max_total_time={seconds}")
    return [sys.executable, "-m", "fuzz", name, *flags, str(work / "corpus"), str(SEEDS / name)]


def run_one(name: str, seconds: int, *, replay: bool) -> Outcome:
    log_path = WORK / name / "last.log"
    cmd = command(name, seconds, replay=replay)
    start = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    outcome = parse_output(
        name, log_path.read_text(errors="replace"), proc.returncode, time.monotonic() - start
    )
    if not outcome.ok:
        print(f"--- {name}: see {log_path}", file=sys.stderr)
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    return outcome


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/fuzz",
        description="Run the atheris harnesses of fuzz/ on their corpora, one after another.",
    )
    parser.add_argument("--seconds", type=int, default=60, help="per harness (default 60)")
    parser.add_argument("--replay", action="store_true", help="run each corpus once, no fuzzing")
    parser.add_argument("--list", action="store_true", help="list the harnesses and exit")
    parser.add_argument("harness", nargs="*", help=f"default: all ({', '.join(MODULES)})")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(MODULES))
        return 0
    unknown = [n for n in args.harness if n not in MODULES]
    if unknown:
        parser.error(f"unknown harness(es): {', '.join(unknown)}")
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    outcomes = [run_one(n, args.seconds, replay=args.replay) for n in args.harness or MODULES]
    print(
        f"{'harness':14} {'executions':>11} {'cov':>6} {'ft':>7} {'corpus':>7} "
        f"{'seconds':>8}  findings"
    )
    for o in outcomes:
        found = (
            ", ".join(o.findings) if o.findings else ("none" if o.ok else f"exit {o.returncode}")
        )
        print(
            f"{o.name:14} {o.executions:11d} {o.coverage:6d} {o.features:7d} {o.corpus:7d} "
            f"{o.seconds:8.1f}  {found}"
        )
    total = sum(o.executions for o in outcomes)
    print(
        f"total executions: {total}; harnesses with findings: "
        f"{sum(not o.ok for o in outcomes)} of {len(outcomes)}"
    )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
