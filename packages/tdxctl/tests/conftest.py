"""The real tdx-sim (platform and PCCS) served in-process, a simulated TD on its PKI, and a
QuoteVerifier trusting the sim's root the way a caller passes its own."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sanic import Sanic

from tdx_service_kit.testing import serve
from tdx_sim import SimSettings, create_app
from tdxctl import QuoteVerifier, TrustSettings

sys.path.insert(0, str(Path(__file__).parent))  # tdxctl_support

from tdxctl_support import SimTd


@pytest.fixture
def sim_state(tmp_path: Path) -> Path:
    return tmp_path / "sim"


@pytest.fixture
async def sim_url(sim_state: Path) -> AsyncIterator[str]:
    """The simulator's PCCS routes on loopback, over the PKI in `sim_state`."""
    Sanic.test_mode = True
    async with serve(create_app(SimSettings(state_dir=sim_state))) as url:
        yield url


@pytest.fixture
def td(sim_state: Path, sim_url: str) -> SimTd:
    return SimTd(sim_state)


@pytest.fixture
def trust(td: SimTd, sim_url: str) -> TrustSettings:
    return TrustSettings(root_ca_pem=td.platform.root_ca_pem, pccs_url=sim_url)


@pytest.fixture
async def verifier(trust: TrustSettings) -> AsyncIterator[QuoteVerifier]:
    async with QuoteVerifier(trust) as qv:
        yield qv
