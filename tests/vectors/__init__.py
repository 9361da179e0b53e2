"""The real TDX test vectors that ship with the repository (sources and licences in NOTICE).

Every suite finds them here, through `VECTORS_DIR`; a missing vector is an error, never a skip.
"""

from __future__ import annotations

from pathlib import Path

VECTORS_DIR = Path(__file__).resolve().parent

INTEL_QUOTE = "tdx_quote_v4.bin"
INTEL_COLLATERAL = "tdx_quote_v4_collateral.json"
GCP_QUOTE = "gcp_cos113_quote.bin"
GCP_CCEL = "gcp_cos113_ccel.bin"
SHIPPED = (INTEL_QUOTE, INTEL_COLLATERAL, GCP_QUOTE, GCP_CCEL)


class MissingVectorError(FileNotFoundError):
    """A test vector that ships with the repository is not in `VECTORS_DIR`."""


def vector_path(name: str) -> Path:
    """The path of the shipped vector `name`; `MissingVectorError` naming it when absent."""
    path = VECTORS_DIR / name
    if not path.is_file():
        raise MissingVectorError(
            f"test vector {name} is missing from {VECTORS_DIR}: it ships with the repository "
            "(see NOTICE there); restore it from git"
        )
    return path


def read_vector(name: str) -> bytes:
    """The bytes of the shipped vector `name` (see `vector_path`)."""
    return vector_path(name).read_bytes()
