"""Inputs the fuzz harnesses of fuzz/ found (kept in tests/fuzz_regressions/), each refused now
with the library's own error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdx_kbs_protocol import TeePublicKey, UnsupportedKeyError

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


def test_an_rsa_jwk_with_an_even_modulus_is_refused() -> None:
    # kbs_jwk: a 2056-bit even modulus passed every check, then encrypt_resource raised
    # OpenSSL's bare ValueError("Encryption failed") from inside joserfc.
    jwk = json.loads((REGRESSIONS / "kbs_jwk_even_rsa_modulus.json").read_text())
    with pytest.raises(UnsupportedKeyError, match="modulus is even"):
        TeePublicKey.from_jwk(jwk)
