"""Fixtures: a fresh state directory, a platform over it, and dcap-qvl as the reference."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sanic import Sanic

from tdx_sim.platform import SimOptions, SimPlatform

Sanic.test_mode = True

RootDer = Callable[[SimPlatform], bytes]
DcapVerify = Callable[..., Any]


def _root_der(platform: SimPlatform) -> bytes:
    cert = x509.load_pem_x509_certificate(platform.root_ca_pem)
    return cert.public_bytes(serialization.Encoding.DER)


def _dcap_verify(
    platform: SimPlatform, quote: bytes, collateral: dict[str, str], now: int | None = None
) -> Any:
    when = int(time.time()) if now is None else now
    parsed = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
    return dcap_qvl.verify_with_root_ca(quote, parsed, _root_der(platform), when)


@pytest.fixture
def root_der() -> RootDer:
    """The sim root CA of a platform, DER, as dcap-qvl takes it."""
    return _root_der


@pytest.fixture
def dcap_verify() -> DcapVerify:
    """dcap-qvl's verdict on (platform, quote, collateral dict[, now]), pinned to the sim root."""
    return _dcap_verify


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def platform(state_dir: Path) -> SimPlatform:
    return SimPlatform(state_dir, SimOptions())
