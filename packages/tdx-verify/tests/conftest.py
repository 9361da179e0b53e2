from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, settings

from tdx_ppid import SGX_EXTENSION_OID, pck_chain_from_quote
from tdx_quote import parse_quote
from tdx_verify import Collateral, Verifier

sys.path.insert(0, str(Path(__file__).parent))

from verify_vectors import COLLATERAL_PATH, QUOTE_PATH
from verify_world import World

settings.register_profile(
    "default", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")


@pytest.fixture(scope="session")
def real_quote() -> bytes:
    return QUOTE_PATH.read_bytes()


@pytest.fixture(scope="session")
def real_collateral_json() -> str:
    return COLLATERAL_PATH.read_text()


@pytest.fixture(scope="session")
def real_collateral(real_collateral_json: str) -> Collateral:
    return Collateral.from_json(real_collateral_json)


@pytest.fixture(scope="session")
def intel_verifier() -> Verifier:
    return Verifier()


@pytest.fixture(scope="session")
def world(real_quote: bytes, real_collateral: Collateral) -> World:
    """The synthetic PKI reuses the real vector's layout, TCB info and SGX extension."""
    quote = parse_quote(real_quote, allow_zero_padding=True)
    leaf = pck_chain_from_quote(quote)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    return World(
        real_quote=quote,
        real_tcb_info=json.loads(real_collateral.tcb_info),
        real_qe_identity=json.loads(real_collateral.qe_identity),
        real_sgx_extension=ext.value.value,
    )
