"""The real Intel collateral that the CRL and issuer-chain harnesses put one fuzzed piece into,
and the verifier that checks it the way `Verifier.verify` and `CollateralCache` do."""

from __future__ import annotations

import functools
from pathlib import Path

from tdx_verify import Collateral, Verifier

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


@functools.cache
def intel_collateral() -> Collateral:
    return Collateral.from_json((VECTORS / "tdx_quote_v4_collateral.json").read_bytes())


@functools.cache
def intel_verifier() -> Verifier:
    return Verifier()
