"""`python -m fuzz NAME [libFuzzer flags] [CORPUS...]`: run one harness under atheris.

The project's packages are imported instrumented, so their branch coverage guides libFuzzer;
an exception outside the harness's `allowed` errors is a crash (libFuzzer saves the input).
"""

from __future__ import annotations

import sys

import atheris
from atheris.import_hook import instrument_imports

from fuzz._harness import PROJECT_PACKAGES
from fuzz.harnesses import UnknownHarness, load


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1].startswith("-"):
        print("usage: python -m fuzz NAME [libFuzzer flags] [CORPUS...]", file=sys.stderr)
        raise SystemExit(2)
    try:
        with instrument_imports(include=list(PROJECT_PACKAGES)):
            harness = load(argv[1])
    except UnknownHarness as exc:
        print(f"fuzz: {exc.args[0]}", file=sys.stderr)
        raise SystemExit(2) from None

    def one_input(data: bytes) -> None:
        harness.run(data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
