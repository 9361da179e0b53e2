"""What both platforms check before a quote or an RTMR3 extension is asked for."""

from __future__ import annotations

from typing import Final

from tdx_measure import REGISTER_SIZE

REPORT_DATA_LEN: Final = 64
MAX_QUOTE_BYTES: Final = 1 << 20
MAX_CCEL_BYTES: Final = 1 << 20
"""The largest CCEL boot log read (the registry takes at most 1 MiB; firmware leaves 64-256 KiB)."""


def check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_LEN:
        raise ValueError(f"report_data must be {REPORT_DATA_LEN} bytes, got {len(report_data)}")


def check_digest(digest: bytes) -> None:
    if len(digest) != REGISTER_SIZE:
        raise ValueError(f"an RTMR digest is {REGISTER_SIZE} bytes, got {len(digest)}")
