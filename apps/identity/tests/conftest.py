"""Shared fixtures: settings in a temp dir, fakes, and a running app with an httpx client."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings as hypothesis_settings
from sanic import Sanic

from tdx_identity import Settings, create_app
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_report_data import Role, sign_instance_v2
from tdx_service_kit import RateLimit
from tdx_service_kit.testing import serve

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr, FakeWorkload

hypothesis_settings.register_profile("identity", max_examples=60, deadline=None)
hypothesis_settings.load_profile("identity")
Sanic.test_mode = True


@pytest.fixture
def front_dir() -> Iterator[Path]:
    """A private directory on a tmpfs (/dev/shm) for the front's key, certificate and config.
    A stopped service leaves a serving front (nginx) for its next start to adopt: at the end
    of the test that front is stopped (checked as for an adoption), then the directory goes."""
    parent = Path(tempfile.mkdtemp(prefix="tdx-front-", dir="/dev/shm"))
    try:
        yield parent / "front"
    finally:
        nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
        if nginx is not None:
            stop_left_front(parent / "front", nginx)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, front_dir: Path) -> Settings:
    return Settings(
        storage_path=tmp_path / "storage",
        configfs_tsm_path=tmp_path / "no-configfs-tsm",
        front_runtime_dir=front_dir,
        rate_limit=RateLimit(per_second=1000.0, burst=1000),
    )


@pytest.fixture
def rtmr() -> FakeRtmr:
    return FakeRtmr()


@pytest.fixture
def quotes(rtmr: FakeRtmr) -> FakeQuoteSource:
    return FakeQuoteSource(rtmr=rtmr)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def workload() -> FakeWorkload:
    return FakeWorkload()


Running = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def running(
    settings: Settings,
    quotes: FakeQuoteSource,
    registry: FakeRegistry,
    workload: FakeWorkload,
    rtmr: FakeRtmr,
) -> Running:
    """`async with running() as client`: the app served on loopback with the fakes injected."""

    @asynccontextmanager
    async def _running(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app_settings = overrides.pop("settings", settings)
        kwargs: dict[str, Any] = {
            "quote_source": quotes,
            "registry": registry,
            "workload": workload,
            "rtmr_device": rtmr,
        }
        kwargs.update(overrides)
        app = create_app(app_settings, **kwargs)
        async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client

    return _running


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return key.sign(message).hex()


def sign_v2(key: Ed25519PrivateKey, role: Role, instance: bytes) -> str:
    """An operator's or owner's v2 signature accepting `instance` in `role`, in hex."""
    return sign_instance_v2(key, role, instance).hex()


def pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


async def instance_pubkey(client: httpx.AsyncClient) -> bytes:
    response = await client.get("/instance/pubkey")
    assert response.status_code == 200
    return bytes.fromhex(response.json()["pubkey"])


async def register_operator(
    client: httpx.AsyncClient, operator: Ed25519PrivateKey
) -> httpx.Response:
    instance = await instance_pubkey(client)
    return await client.post(
        "/operator/register",
        json={"pubkey": pub(operator).hex(), "signature": sign_v2(operator, "operator", instance)},
    )


async def register_owner(
    client: httpx.AsyncClient, owner: Ed25519PrivateKey, token: str | None
) -> httpx.Response:
    instance = await instance_pubkey(client)
    headers = {"x-token": token} if token is not None else {}
    return await client.post(
        "/owner/register",
        json={"pubkey": pub(owner).hex(), "signature": sign_v2(owner, "owner", instance)},
        headers=headers,
    )


AGREED = {"status": "agreed", "reason": None}
"""`GET /instance/state`'s `registry_comparison` once the state agrees with the registry."""
