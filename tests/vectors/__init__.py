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
OUTDATED_V5_QUOTE = "dcapqvl_tdx_quote_v5_outdated.bin"
OUTDATED_V5_COLLATERAL = "dcapqvl_tdx_quote_v5_outdated_collateral.json"
ZKDCAP_QUOTE = "zkdcap_quote_v4.bin"
AUTOMATA_8000_QUOTE = "automata_quote_tdx_8000.bin"
SPR_E4_QUOTE = "gotdx_spr_e4_quote.bin"
"""go-tdx-guest appended 39 non-zero bytes after this quote (tests/test_real_quotes.py)."""

REAL_QUOTES = (
    INTEL_QUOTE,
    GCP_QUOTE,
    "trustee_tdx_quote_4.bin",
    "trustee_tdx_quote_5.bin",
    "trustee_tdx_quote_6.bin",
    "trustee_azure_td_quote.bin",
    SPR_E4_QUOTE,
    "gotdx_quote_v5.bin",
    OUTDATED_V5_QUOTE,
    "dcapqvl_tappd_quote.hex",
    "dcapqvl_tdx_quote.hex",
    "automata_alibaba_quote_v5.bin",
    AUTOMATA_8000_QUOTE,
    "openenclave_tdx_quote_v4.bin",
    "openenclave_tdx_quote_v5.bin",
    "openenclave_tdx_quote_v5_seamldr5.bin",
    ZKDCAP_QUOTE,
)
"""Every real TDX quote that ships here (raw bytes, or hex text for the `.hex` files)."""

ZKDCAP_TCB_INFO = "zkdcap_tcbinfov3_00806f050000.json"
ZKDCAP_QE_IDENTITY = "zkdcap_qeidentityv2_tdx.json"
ZKDCAP_ROOT_CA_CRL = "zkdcap_intel_root_ca_crl.der"
ZKDCAP_PCK_CRL = "zkdcap_pck_platform_crl.der"
ZKDCAP_TCB_SIGNING_CERT = "zkdcap_tcb_signing_cert.pem"
ZKDCAP_COLLATERAL = (
    ZKDCAP_TCB_INFO,
    ZKDCAP_QE_IDENTITY,
    ZKDCAP_ROOT_CA_CRL,
    ZKDCAP_PCK_CRL,
    ZKDCAP_TCB_SIGNING_CERT,
)
"""Intel's collateral for FMSPC 00806F050000 in pieces, as PCS serves them (NOTICE)."""

SHIPPED = (
    *REAL_QUOTES,
    INTEL_COLLATERAL,
    OUTDATED_V5_COLLATERAL,
    *ZKDCAP_COLLATERAL,
    GCP_CCEL,
)


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


def read_quote_vector(name: str) -> bytes:
    """The quote bytes of the shipped quote vector `name`: the file itself, or for a `.hex` file
    its hex text decoded (surrounding whitespace and a `0x` prefix allowed)."""
    raw = read_vector(name)
    if not name.endswith(".hex"):
        return raw
    text = raw.decode("ascii").strip()
    return bytes.fromhex(text.removeprefix("0x"))
