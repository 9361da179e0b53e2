"""The identity service's operations routes: /healthz, /readyz (the registry, the key broker
when set, the platform's RTMR3: ready, and not ready naming the one that does not answer),
/metrics (service-kit's requests, the lifecycle state, the workload, key fetches) and
/openapi.json (valid OpenAPI 3.1, the app's routes exactly, and real answers, success and
error, validated against it)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from conftest import Running, instance_pubkey, pub, register_operator, register_owner, sign_v2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeRtmr
from prometheus_client.parser import text_string_to_metric_families
from sanic import Sanic

from tdx_identity import Settings
from tdx_identity.ops import openapi_document
from tdx_service_kit import HttpLimits, OpenApiDocument, install_common, install_ops
from tdx_service_kit.openapi_testing import (
    assert_routes_match,
    check_document,
    validate_request,
    validate_response,
)
from tdx_service_kit.testing import free_port, serve

_names = itertools.count()


@asynccontextmanager
async def dependency() -> AsyncIterator[str]:
    """A service answering /healthz as every service of this repository does (service-kit)."""
    app: Sanic[Any, Any] = Sanic(f"dependency_{next(_names)}")
    install_common(app, limits=HttpLimits(), rate_limit=None)
    install_ops(
        app,
        openapi=OpenApiDocument.from_object(
            {"openapi": "3.1.0", "info": {"title": "dependency", "version": "0"}, "paths": {}}
        ),
    )
    async with serve(app) as url:
        yield url


def nothing_listening() -> str:
    return f"http://127.0.0.1:{free_port()}"


def with_urls(settings: Settings, registry: str, key_broker: str | None = None) -> Settings:
    return dataclasses.replace(settings, registry_url=registry, key_broker_url=key_broker)


async def answer(
    client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """The answer to one request, validated against the app's own /openapi.json (and a JSON
    body it accepted too)."""
    response = await client.request(method, path, **kwargs)
    document = (await client.get("/openapi.json")).json()
    if response.is_success and "json" in kwargs:
        validate_request(document, method, path.split("?")[0], kwargs["json"])
    content_type = response.headers["content-type"].split(";")[0]
    body = response.json() if content_type == "application/json" else response.text
    validate_response(
        document, method, path.split("?")[0], response.status_code, body, content_type=content_type
    )
    return response


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric family `name` in a Prometheus text exposition, by labels."""
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return {
                tuple(sorted(s.labels.items())): s.value
                for s in family.samples
                if not s.name.endswith("_created")
            }
    raise AssertionError(f"no metric {name}")


def test_the_document_is_valid_openapi_3_1_with_the_kits_routes() -> None:
    document = openapi_document()
    check_document(document)
    assert document.document["openapi"].startswith("3.1.")
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(document.document["paths"])


async def test_the_documents_paths_are_the_apps_routes(running: Running) -> None:
    async with running() as client:
        app: Sanic[Any, Any] = client.app  # type: ignore[attr-defined]
        assert_routes_match(app, openapi_document())
        served = await answer(client, "GET", "/openapi.json")
        assert served.json() == openapi_document().document


async def test_healthz_answers_while_the_process_serves(
    running: Running, settings: Settings
) -> None:
    async with running(settings=with_urls(settings, nothing_listening())) as client:
        response = await answer(client, "GET", "/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


async def test_ready_while_the_registry_and_the_platform_answer(
    running: Running, settings: Settings
) -> None:
    async with (
        dependency() as registry_url,
        running(settings=with_urls(settings, registry_url)) as client,
    ):
        response = await answer(client, "GET", "/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"registry": {"state": "ok"}, "platform": {"state": "ok"}},
    }


async def test_not_ready_while_the_registry_does_not_answer_and_its_url_is_not_shown(
    running: Running, settings: Settings
) -> None:
    port = free_port()
    registry_url = f"http://operator:s3cret@127.0.0.1:{port}"
    async with running(settings=with_urls(settings, registry_url)) as client:
        response = await answer(client, "GET", "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["registry"]
    assert body["checks"]["registry"] == {
        "state": "failed",
        "reason": "the registry did not answer (ConnectError)",
    }
    assert body["checks"]["platform"] == {"state": "ok"}
    assert "s3cret" not in response.text and str(port) not in response.text


async def test_not_ready_while_rtmr3_cannot_be_read(
    running: Running, settings: Settings, rtmr: FakeRtmr
) -> None:
    async with (
        dependency() as registry_url,
        running(settings=with_urls(settings, registry_url)) as client,
    ):
        rtmr.fail = True
        response = await answer(client, "GET", "/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["platform"]
    assert response.json()["checks"]["platform"]["reason"] == (
        "RTMR3 could not be read (RtmrDeviceError)"
    )


async def test_the_key_broker_is_checked_only_when_set(
    running: Running, settings: Settings
) -> None:
    async with dependency() as registry_url, dependency() as broker_url:
        async with running(settings=with_urls(settings, registry_url, broker_url)) as client:
            ready = await answer(client, "GET", "/readyz")
        down = with_urls(settings, registry_url, nothing_listening())
        async with running(settings=down) as client:
            not_ready = await answer(client, "GET", "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["key_broker"] == {"state": "ok"}
    assert not_ready.status_code == 503
    assert not_ready.json()["failing"] == ["key_broker"]
    assert not_ready.json()["checks"]["key_broker"]["reason"] == (
        "the key broker did not answer (ConnectError)"
    )


async def test_metrics_count_requests_and_follow_the_lifecycle(running: Running) -> None:
    async with running() as client:
        before = (await answer(client, "GET", "/metrics")).text
        operator = await register_operator(client, Ed25519PrivateKey.generate())
        assert operator.status_code == 200
        refused = await register_owner(client, Ed25519PrivateKey.generate(), "wrong")
        assert refused.status_code == 401
        after = (await answer(client, "GET", "/metrics")).text
    state = samples(before, "tdx_identity_lifecycle_state")
    assert state[(("state", "fresh"),)] == 1.0
    assert sum(state.values()) == 1.0
    state = samples(after, "tdx_identity_lifecycle_state")
    assert state[(("state", "operator_registered"),)] == 1.0
    assert sum(state.values()) == 1.0
    assert len(state) == 5
    requests = samples(after, "tdx_identity_http_requests")
    assert requests[(("method", "POST"), ("route", "/operator/register"), ("status", "200"))] == 1
    assert requests[(("method", "POST"), ("route", "/owner/register"), ("status", "401"))] == 1
    comparison = samples(after, "tdx_identity_registry_comparison")
    assert comparison[(("status", "agreed"),)] == 1.0
    workload = samples(after, "tdx_identity_workload_status")
    assert workload[(("status", "stopped"),)] == 1.0
    assert sum(workload.values()) == 1.0
    # No podman manager and no key broker here: their counters are there, at zero.
    recoveries = samples(after, "tdx_identity_workload_recoveries")
    assert set(recoveries.values()) == {0.0}
    assert {dict(k)["outcome"] for k in recoveries} == {"kept", "restarted", "refused"}
    fetches = samples(after, "tdx_identity_key_broker_fetches")
    assert set(fetches.values()) == {0.0}


async def test_routes_answer_what_the_document_says_success_and_error(running: Running) -> None:
    async with running() as client:
        await answer(client, "GET", "/instance/pubkey")
        await answer(client, "GET", "/instance/state")
        await answer(client, "GET", "/instance/eventlog")
        await answer(client, "GET", "/workload/ssh-host-key")
        ok = await answer(client, "GET", "/instance/attestation?nonce=" + "ab" * 32)
        assert ok.status_code == 200
        bad = await answer(client, "GET", "/instance/attestation?nonce=abc")
        assert bad.status_code == 400
        malformed = await answer(client, "POST", "/operator/register", content=b"{")
        assert malformed.status_code == 400
        unsigned = await answer(client, "POST", "/workload/configure", json={})
        assert unsigned.status_code == 401
        no_token = await answer(
            client, "POST", "/owner/register", json={"pubkey": "00" * 32, "signature": "00" * 64}
        )
        assert no_token.status_code == 401
        body = {"pubkey": "00" * 32, "signature": "00" * 64}
        forged = await answer(client, "POST", "/operator/register", json=body)
        assert forged.status_code == 401, "a signature that does not verify"
        operator = Ed25519PrivateKey.generate()
        instance = await instance_pubkey(client)
        body = {"pubkey": pub(operator).hex(), "signature": sign_v2(operator, "operator", instance)}
        registered = await answer(client, "POST", "/operator/register", json=body)
        assert registered.status_code == 200
        again = await answer(client, "POST", "/operator/register", json=body)
        assert again.status_code == 400
