"""Shared fixtures: the real Intel quote (shipped in tests/vectors; an error when missing) and
the hypothesis profile for this package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.vectors import INTEL_QUOTE, read_vector

# The tests run under --import-mode=importlib, which does not put test folders on sys.path: make
# this folder's helper module (quote_strategies, a name no other package uses) importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile(
    "tdx-quote",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "tdx-quote-thorough",
    parent=settings.get_profile("tdx-quote"),
    max_examples=3000,
)
# TDX_QUOTE_HYPOTHESIS_PROFILE=tdx-quote-thorough for a long run by hand.
settings.load_profile(os.environ.get("TDX_QUOTE_HYPOTHESIS_PROFILE", "tdx-quote"))

REAL_QUOTE_SIZE = 4936


@pytest.fixture(scope="session")
def real_quote_file() -> bytes:
    """The real TDX v4 quote: 4,936 bytes followed by 70 zero bytes."""
    return read_vector(INTEL_QUOTE)


@pytest.fixture(scope="session")
def real_quote(real_quote_file: bytes) -> bytes:
    """The real quote without its zero padding."""
    return real_quote_file[:REAL_QUOTE_SIZE]
