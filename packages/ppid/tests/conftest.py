"""The hypothesis profile of this package and the real Intel vector (an error when missing)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from ppid_helpers import REAL_QUOTE, real_pem_blocks

settings.register_profile(
    "tdx-ppid",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("tdx-ppid")


@pytest.fixture(scope="session")
def real_quote_bytes() -> bytes:
    """The real TDX v4 quote from Intel hardware (4,936 bytes and 70 zero bytes)."""
    return REAL_QUOTE.read_bytes()


@pytest.fixture(scope="session")
def real_pems(real_quote_bytes: bytes) -> list[bytes]:
    """The real quote's PEM chain, found in its raw bytes: leaf, platform CA, root."""
    blocks = real_pem_blocks()
    assert len(blocks) == 3
    return blocks
