"""The real Intel vectors (shipped in tests/vectors; an error when missing) and the time at which
they verify."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.vectors import INTEL_COLLATERAL, INTEL_QUOTE, vector_path

QUOTE_PATH = vector_path(INTEL_QUOTE)
COLLATERAL_PATH = vector_path(INTEL_COLLATERAL)
VECTOR_NOW_TS = 1752919234
VECTOR_NOW = datetime.fromtimestamp(VECTOR_NOW_TS, UTC)
