"""The registry's /healthz, /readyz, /metrics and /openapi.json over real HTTP, against the real
simulator (tdx-sim in-process: its quotes and its PCCS), a real SQLite store and real DCAP
verification; every answer is checked against the registry's OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families
from registry_helpers import REGISTRY_OPENAPI, FakeCache, Instance, Running, openapi_client
from sanic import Sanic
from test_registry_api import BrokenStore

from tdx_registry import DatabaseTarget, DcapQuoteVerifier, PonyRecordStore, Settings, create_app
from tdx_registry.ops import SKIPPED_PCCS, failing_step
from tdx_report_data import prove_possession, report_data_for_v2
from tdx_service_kit import DEFAULT_READINESS_CACHE, RateLimit
from tdx_service_kit.openapi_testing import assert_routes_match, check_document
from tdx_service_kit.testing import free_port, serve
from tdx_sim import SimOptions, SimPlatform
from tdx_sim.app import SimSettings
from tdx_sim.app import create_app as create_sim_app
from tdx_verify import PccsError, Policy, QuoteSignatureError, VerificationError

PCCS_PASSWORD = "pccs-pa55word-never-shown"
DB_PASSWORD = "db-pa55word-never-shown"


@dataclass
class Sim:
    url: str
    platform: SimPlatform
    root_ca: Path


@asynccontextmanager
async def running_sim(state_dir: Path) -> AsyncIterator[Sim]:
    Sanic.test_mode = True
    app = create_sim_app(SimSettings(state_dir=state_dir, options=SimOptions()))
    async with serve(app) as url:
        yield Sim(url, app.ctx.platform, state_dir / "root_ca.pem")


def settings_for(tmp_path: Path, pccs_url: str, **overrides: Any) -> Settings:
    overrides.setdefault("policy", Policy())
    overrides.setdefault("rate_limit", None)
    return Settings(
        database=DatabaseTarget(sqlite_path=tmp_path / "registry.db"),
        pccs_url=pccs_url,
        allow_missing_event_log=True,
        any_measurement=True,
        read_cache_ttl=0,
        log_key_path=tmp_path / "registry-log.key",
        **overrides,
    )


@asynccontextmanager
async def registry(
    settings: Settings, name: str, **kwargs: Any
) -> AsyncIterator[tuple[Sanic[Any, Any], httpx.AsyncClient]]:
    app = create_app(settings, name=name, **kwargs)
    async with serve(app) as url, openapi_client(url) as client:
        yield app, client


async def register(client: httpx.AsyncClient, sim: Sim) -> httpx.Response:
    """A v2 registration of a fresh instance key with a quote of the simulated TD (no log)."""
    key = Ed25519PrivateKey.generate()
    pubkey = key.public_key().public_bytes_raw()
    challenge = bytes.fromhex((await client.get("/challenge")).json()["nonce"])
    binding = report_data_for_v2(pubkey, sim.platform.ppid, challenge, None, None)
    body = {
        "instance_pubkey": pubkey.hex(),
        "ppid": sim.platform.ppid.hex(),
        "attestation_quote": base64.b64encode(sim.platform.quote(binding)).decode(),
        "operator": None,
        "owner": None,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(key, challenge, binding).hex(),
    }
    return await client.post("/register", json=body)


def metric(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def test_healthz_answers_while_serving(tmp_path: Path, app_name: str) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    async with registry(settings, app_name) as (_, client):
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_the_database_and_the_pccs(
    tmp_path: Path, app_name: str
) -> None:
    async with running_sim(tmp_path / "sim") as sim:
        settings = settings_for(tmp_path, sim.url, trusted_root_ca_pem=sim.root_ca.read_bytes())
        async with registry(settings, app_name) as (_, client):
            response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": {"state": "ok"}, "pccs": {"state": "ok"}},
    }


async def test_readyz_names_an_unreachable_pccs_without_its_credentials(
    tmp_path: Path, app_name: str
) -> None:
    url = f"http://registry:{PCCS_PASSWORD}@127.0.0.1:{free_port()}"
    async with registry(settings_for(tmp_path, url), app_name) as (_, client):
        response = await client.get("/readyz")
        health = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["pccs"]
    assert body["error"] == "not ready: pccs not answering"
    assert body["checks"]["database"] == {"state": "ok"}
    assert body["checks"]["pccs"] == {
        "state": "failed",
        "reason": "the PCCS did not answer (ConnectError)",
    }
    assert PCCS_PASSWORD not in response.text
    assert health.status_code == 200


async def test_readyz_names_a_pccs_that_accepts_but_never_answers(
    tmp_path: Path, app_name: str
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with registry(settings_for(tmp_path, url), app_name) as (_, client):
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["pccs"]
    assert response.json()["checks"]["pccs"]["state"] == "failed"


async def test_readyz_names_a_database_that_fails(
    tmp_path: Path, app_name: str, cache: FakeCache
) -> None:
    async with running_sim(tmp_path / "sim") as sim:
        settings = settings_for(tmp_path, sim.url, trusted_root_ca_pem=sim.root_ca.read_bytes())
        store = BrokenStore()
        async with registry(settings, app_name, store=store, verifier=DcapQuoteVerifier(cache)) as (
            _,
            client,
        ):
            response = await client.get("/readyz")
            health = await client.get("/healthz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["error"] == "not ready: database not answering"
    assert body["checks"]["database"] == {
        "state": "failed",
        "reason": "the database did not answer (StoreError)",
    }
    assert body["checks"]["pccs"] == {"state": "ok"}
    assert "connection refused" not in response.text
    assert health.status_code == 200


async def test_readyz_skips_the_pccs_under_skip_tdx_auth_saying_so(
    tmp_path: Path, app_name: str
) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", skip_tdx_auth=True)
    async with registry(settings, app_name) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["pccs"] == {"state": "skipped", "reason": SKIPPED_PCCS}
    assert "SKIP_TDX_AUTH" in SKIPPED_PCCS


async def test_metrics_count_real_registrations_fetches_and_cache_hits(
    tmp_path: Path, app_name: str
) -> None:
    async with running_sim(tmp_path / "sim") as sim:
        settings = settings_for(tmp_path, sim.url, trusted_root_ca_pem=sim.root_ca.read_bytes())
        async with registry(settings, app_name) as (_, client):
            first = await register(client, sim)
            second = await register(client, sim)
            for _ in range(3):
                await client.get(f"/instance/{'ab' * 32}")
            await client.get("/no/such/route/for/attackers")
            response = await client.get("/metrics")
    assert first.status_code == second.status_code == 200
    assert response.status_code == 200
    text = response.text
    ns = app_name.replace("-", "_")
    assert metric(text, f"{ns}_quote_verifications_total", result="verified", step="") == 2
    assert metric(text, f"{ns}_pccs_fetches_total", result="ok") == 1
    assert metric(text, f"{ns}_collateral_cache_hits_total") == 1
    requests = f"{ns}_http_requests_total"
    assert metric(text, requests, route="/register", method="POST", status="200") == 2
    assert metric(text, requests, route="/challenge", method="GET", status="200") == 2
    assert metric(text, requests, route="/instance/{pubkey}", method="GET", status="404") == 3
    assert metric(text, requests, route="unmatched", method="GET", status="404") == 1
    assert "attackers" not in text
    latency = f"{ns}_http_request_duration_seconds_count"
    assert metric(text, latency, route="/register", method="POST") == 2


async def test_metrics_count_refusals_by_failing_step(
    running: Running, cache: FakeCache, app_name: str
) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    cache.error = QuoteSignatureError("quote signature", "not signed by the attestation key")
    async with running() as client:
        refused = await client.post("/register", json=await instance.fresh(client, operator))
        cache.error = PccsError("GET /tdx/certification/v4/tcb: HTTP 500")
        upstream = await client.post("/register", json=await instance.fresh(client, operator))
        text = (await client.get("/metrics")).text
    assert (refused.status_code, upstream.status_code) == (401, 502)
    ns = app_name.replace("-", "_")
    name = f"{ns}_quote_verifications_total"
    assert metric(text, name, result="refused", step="quote signature") == 1
    assert metric(text, name, result="error", step="pccs") == 1
    assert metric(text, name, result="verified", step="") == 0


def test_failing_step_keeps_the_label_set_bounded() -> None:
    assert failing_step(VerificationError("pck_chain", "x")) == ("refused", "pck_chain")
    assert failing_step(VerificationError("Step\nwith {odd} chars", "x")) == ("refused", "other")
    assert failing_step(ValueError("not ours")) is None


async def test_openapi_document_is_valid_and_its_paths_are_the_routes(
    tmp_path: Path, app_name: str, cache: FakeCache
) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    async with registry(settings, app_name, verifier=DcapQuoteVerifier(cache)) as (app, client):
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served == REGISTRY_OPENAPI.document
    assert served["openapi"].startswith("3.1.")
    check_document(served)
    assert_routes_match(app, served)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_ops_routes_are_not_rate_limited(
    tmp_path: Path, app_name: str, cache: FakeCache, path: str
) -> None:
    settings = settings_for(
        tmp_path,
        f"http://127.0.0.1:{free_port()}",
        skip_tdx_auth=True,
        rate_limit=RateLimit(per_second=0.01, burst=1),
    )
    async with registry(settings, app_name) as (_, client):
        statuses = [(await client.get(path)).status_code for _ in range(5)]
        challenges = [(await client.get("/challenge")).status_code for _ in range(2)]
    assert statuses == [200] * 5
    assert challenges == [200, 429]


async def test_readyz_names_a_database_that_is_gone(
    tmp_path: Path, app_name: str, db_target: DatabaseTarget
) -> None:
    """A real failure on each backend: PostgreSQL's database dropped under the registry (its
    password, which the URL carries, is never shown); SQLite's file replaced by one that is not
    a database, seen once the store's connection is opened again (which, before, escaped the
    store unwrapped: a 500)."""
    target = db_target
    if target.postgres_url is not None:
        target = DatabaseTarget(
            postgres_url=target.postgres_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
        )
    url = f"http://127.0.0.1:{free_port()}"
    settings = replace(settings_for(tmp_path, url, skip_tdx_auth=True), database=target)
    async with registry(settings, app_name) as (app, client):
        assert (await client.get("/readyz")).status_code == 200
        if target.postgres_url is not None:
            _drop_database(target.postgres_url)
        else:
            assert target.sqlite_path is not None
            replacement = target.sqlite_path.with_name("not-a-database")
            replacement.write_bytes(b"this is not an SQLite database" * 200)
            for sidecar in target.sqlite_path.parent.glob(target.sqlite_path.name + "-*"):
                sidecar.unlink()  # unlinked, never truncated: the WAL index stays mapped
            replacement.replace(target.sqlite_path)
            store: PonyRecordStore = app.ctx.services.store
            await store._run(store._db.disconnect)
        await asyncio.sleep(DEFAULT_READINESS_CACHE + 0.1)  # past the reuse of the last result
        response = await client.get("/readyz")
        read = await client.get(f"/instance/{'ab' * 32}")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == {
        "state": "failed",
        "reason": "the database did not answer (StoreError)",
    }
    assert DB_PASSWORD not in response.text
    assert read.status_code == 503, read.text  # a store error, never a 500
    assert read.json() == {"error": "the record store is unavailable, nothing was stored"}


def _drop_database(postgres_url: str) -> None:
    dsn, name = postgres_url.rsplit("/", 1)
    admin = psycopg2.connect(f"{dsn}/postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.close()
