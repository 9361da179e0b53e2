"""Where the real Intel vectors live, and the time at which they verify."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

VECTORS = (Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors").resolve()
QUOTE_PATH = VECTORS / "tdx_quote_v4.bin"
COLLATERAL_PATH = VECTORS / "tdx_quote_v4_collateral.json"
VECTOR_NOW_TS = 1752919234
VECTOR_NOW = datetime.fromtimestamp(VECTOR_NOW_TS, UTC)
