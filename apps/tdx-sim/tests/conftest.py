"""Fixtures: a fresh state directory, a platform over it, the sim app served on loopback, and
dcap-qvl as the reference."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sanic import Sanic

from tdx_service_kit import OpenApiDocument
from tdx_service_kit.openapi_testing import validate_exchange
from tdx_service_kit.testing import serve
from tdx_sim.app import SimSettings, create_app
from tdx_sim.platform import SimOptions, SimPlatform

Sanic.test_mode = True

RootDer = Callable[[SimPlatform], bytes]
DcapVerify = Callable[..., Any]
RunSim = Callable[[SimOptions], AbstractAsyncContextManager[tuple[str, SimPlatform]]]


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


@pytest.fixture
def run_sim(state_dir: Path) -> RunSim:
    """Serve a new sim app (a new simulated TD boot) over `state_dir` on an ephemeral loopback
    port; the context yields its base URL and its platform."""

    @asynccontextmanager
    async def running(options: SimOptions) -> AsyncIterator[tuple[str, SimPlatform]]:
        app = create_app(SimSettings(state_dir=state_dir, options=options))
        async with serve(app) as base_url:
            yield base_url, app.ctx.platform

    return running


@pytest.fixture
async def sim(run_sim: RunSim) -> AsyncIterator[tuple[str, SimPlatform]]:
    async with run_sim(SimOptions()) as sim:
        yield sim


SIM_OPENAPI = OpenApiDocument.from_package("tdx_sim", "openapi.json")


async def check_against_openapi(response: httpx.Response) -> None:
    """httpx response hook: every answer must be one tdx-sim's OpenAPI document lists."""
    await response.aread()
    validate_exchange(
        SIM_OPENAPI,
        response.request.method,
        response.request.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        request_body=response.request.content,
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client checking each answer against tdx-sim's OpenAPI document."""
    async with httpx.AsyncClient(
        timeout=10, event_hooks={"response": [check_against_openapi]}
    ) as c:
        yield c
