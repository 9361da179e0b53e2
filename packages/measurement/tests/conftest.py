"""The hypothesis profile of this package; makes the shared strategies module importable."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# pytest runs with --import-mode=importlib, which does not put a test directory on sys.path;
# the test modules import their shared strategies from `measure_strategies` beside this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

settings.register_profile(
    "tdx-measure",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("tdx-measure")
