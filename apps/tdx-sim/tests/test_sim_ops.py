"""tdx-sim's operations routes (the service kit's `install_ops`) and its OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import SIM_OPENAPI, RunSim
from prometheus_client.parser import text_string_to_metric_families

from tdx_service_kit.openapi_testing import assert_routes_match, check_document
from tdx_sim.app import SimSettings, create_app
from tdx_sim.platform import SimOptions, SimPlatform


async def test_healthz_and_readyz_answer_while_serving(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    health = await client.get(f"{base}/healthz")
    ready = await client.get(f"{base}/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": {}})


async def test_metrics_count_the_pccs_routes_by_pattern(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    await client.get(f"{base}/sgx/certification/v4/rootcacrl")
    await client.get(f"{base}/attest/{'ab' * 64}")
    await client.get(f"{base}/attest/{'cd' * 64}")
    text = (await client.get(f"{base}/metrics")).text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    name = "tdx_sim_http_requests_total"
    rootcrl = (("method", "GET"), ("route", "/sgx/certification/v4/rootcacrl"), ("status", "200"))
    assert found[(name, rootcrl)] == 1
    attest = (("method", "GET"), ("route", "/attest/{report_data_hex}"), ("status", "200"))
    assert found[(name, attest)] == 2


async def test_openapi_document_is_served_and_valid(
    run_sim: RunSim, client: httpx.AsyncClient
) -> None:
    async with run_sim(SimOptions()) as (base, _):
        served = (await client.get(f"{base}/openapi.json")).json()
    assert served == SIM_OPENAPI.document
    check_document(served)


def test_the_apps_routes_are_the_documents_paths(state_dir: Path) -> None:
    app = create_app(SimSettings(state_dir=state_dir, options=SimOptions()))
    assert_routes_match(app, SIM_OPENAPI)
