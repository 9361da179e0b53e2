"""The real tdx-sim (platform and PCCS) served in-process, and a simulated TD making attested
certificates on its PKI."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sanic import Sanic

from tdx_service_kit.testing import serve
from tdx_sim import SimOptions, SimPlatform, SimSettings, create_app

sys.path.insert(0, str(Path(__file__).parent))  # atls_support

from atls_support import CertMaker


@pytest.fixture
def sim_state(tmp_path: Path) -> Path:
    return tmp_path / "sim"


@pytest.fixture
def platform(sim_state: Path) -> SimPlatform:
    return SimPlatform(sim_state, SimOptions())


@pytest.fixture
async def sim_url(platform: SimPlatform, sim_state: Path) -> AsyncIterator[str]:
    """The simulator's PCCS routes on loopback, over the PKI of `platform`."""
    Sanic.test_mode = True
    async with serve(create_app(SimSettings(state_dir=sim_state))) as url:
        yield url


@pytest.fixture
def maker(platform: SimPlatform) -> CertMaker:
    return CertMaker(platform)
