"""What a harness is, and what counts as a finding.

A harness feeds one input to a library and lets through only the library's own named errors
(`allowed`). Anything else escapes to libFuzzer as a crash: another exception type, an
acceptance the reference refuses (`Finding`), or a run over the time limit (libFuzzer's
`-timeout`). Harness modules import nothing of atheris: the regression tests and `--replay` run
them without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The project's top-level packages: atheris instruments these (their coverage guides the
# fuzzer); the standard library and third-party code run uninstrumented.
PROJECT_PACKAGES = (
    "tdx_quote",
    "tdx_verify",
    "tdx_measure",
    "tdx_ppid",
    "tdx_report_data",
    "tdx_kbs_protocol",
    "tdx_kbs",
    "tdx_registry",
    "tdx_identity",
    "tdx_service_kit",
)


class Finding(AssertionError):
    """An input the library handled wrongly without raising: it accepted what the reference
    refuses, or its answer is inconsistent with itself (a round trip that changes the value)."""


@dataclass(frozen=True)
class Harness:
    """`target(data)` runs the library on one input; raising an instance of `allowed` is the
    library refusing the input, which is fine; returning is the library accepting it."""

    name: str
    summary: str
    target: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]

    def run(self, data: bytes) -> bool:
        """Whether the library accepted `data` (False: refused with an allowed error)."""
        try:
            self.target(data)
        except self.allowed:
            return False
        return True
