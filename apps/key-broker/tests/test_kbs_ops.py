"""The key broker's operations routes: /healthz, /readyz (the database and the PCCS: ready, and
not ready naming the one that does not answer), /metrics (attestations by result, releases by
outcome, policy denials, beside service-kit's requests) and /openapi.json (valid OpenAPI 3.1,
the app's routes exactly, and real answers, success and error, validated against it)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from kbs_helpers import KBS, Broker, Guest, Sim, error_variant, start_broker
from prometheus_client.parser import text_string_to_metric_families

from tdx_kbs import DatabaseTarget
from tdx_kbs.ops import ATTESTATION_RESULTS, RELEASE_OUTCOMES, openapi_document
from tdx_service_kit import DEFAULT_READINESS_CACHE
from tdx_service_kit.openapi_testing import (
    assert_routes_match,
    check_document,
    validate_request,
    validate_response,
)
from tdx_service_kit.testing import free_port

RESOURCE_PREFIX = f"{KBS}/resource/"


def template(path: str, document: dict[str, Any]) -> str:
    """The document's path for a request path. The broker's `{path}` and `{rest}` parameters
    take slashes (Sanic's `path` type), which OpenAPI templates do not match."""
    if path in document["paths"]:
        return path
    if path.startswith(RESOURCE_PREFIX):
        return RESOURCE_PREFIX + "{path}"
    if path.startswith(f"{KBS}/"):
        return f"{KBS}/{{rest}}"
    return path


def check_answer(document: dict[str, Any], response: httpx.Response) -> None:
    """`response` is one the document describes for its request (an empty 200 has no body),
    and a JSON body the broker accepted is one the document describes."""
    request = response.request
    path = template(request.url.path, document)
    if response.is_success and request.headers.get("content-type") == "application/json":
        validate_request(document, request.method, path, json.loads(request.content))
    if not response.content:
        operation = document["paths"][path][request.method.lower()]
        listed = operation["responses"][str(response.status_code)]
        assert "content" not in listed, f"{request.method} {path} answered no body"
        return
    content_type = response.headers["content-type"].split(";")[0]
    body = response.json() if content_type == "application/json" else response.text
    validate_response(
        document, request.method, path, response.status_code, body, content_type=content_type
    )


async def served_document(broker: Broker) -> dict[str, Any]:
    response = await broker.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
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
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(document.document["paths"])


async def test_the_documents_paths_are_the_apps_routes_and_it_is_served(broker: Broker) -> None:
    assert_routes_match(broker.app, openapi_document())
    assert await served_document(broker) == openapi_document().document


async def test_healthz_and_ready_with_the_database_and_the_pccs(broker: Broker) -> None:
    document = await served_document(broker)
    health = await broker.client.get("/healthz")
    check_answer(document, health)
    assert health.json() == {"status": "ok"}
    ready = await broker.client.get("/readyz")
    check_answer(document, ready)
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": {"state": "ok"}, "pccs": {"state": "ok"}},
    }


async def test_not_ready_while_the_pccs_does_not_answer_and_its_url_is_not_shown(
    sim: Sim, tmp_path: Path
) -> None:
    port = free_port()
    pccs_url = f"http://user:s3cret@127.0.0.1:{port}"
    async with start_broker(sim, tmp_path, "kbs-ops-pccs-down", pccs_url=pccs_url) as broker:
        response = await broker.client.get("/readyz")
        check_answer(await served_document(broker), response)
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["pccs"]
    assert body["checks"] == {
        "database": {"state": "ok"},
        "pccs": {"state": "failed", "reason": "the PCCS did not answer (ConnectError)"},
    }
    assert "s3cret" not in response.text and str(port) not in response.text


async def test_not_ready_while_the_database_is_gone(
    sim: Sim, tmp_path: Path, db_target: DatabaseTarget, request: Any
) -> None:
    async with start_broker(sim, tmp_path, "kbs-ops-db", database=db_target) as broker:
        assert (await broker.client.get("/readyz")).status_code == 200
        if db_target.postgres_url is not None:
            # The database goes away under the broker (its connections are terminated);
            # psycopg2 is installed with the PostgreSQL backend only.
            import psycopg2

            cluster = request.getfixturevalue("postgres_cluster")
            name = db_target.postgres_url.rsplit("/", 1)[1]
            admin = psycopg2.connect(cluster.url("postgres"))
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.close()
        else:
            # The file replaced by one that is not a database, seen once the store connects
            # again (which, before, escaped the store unwrapped: a 500 on every route).
            assert db_target.sqlite_path is not None
            replacement = db_target.sqlite_path.with_name("not-a-database")
            replacement.write_bytes(b"this is not an SQLite database" * 200)
            for sidecar in db_target.sqlite_path.parent.glob(db_target.sqlite_path.name + "-*"):
                sidecar.unlink()  # unlinked, never truncated: the WAL index stays mapped
            replacement.replace(db_target.sqlite_path)
            await broker.store._run("disconnecting", broker.store._db.disconnect)
        await _after_cache()
        response = await broker.client.get("/readyz")
        document = await served_document(broker)
        check_answer(document, response)
        upload = await broker.put("a/b/c", b"x")
        check_answer(document, upload)
    assert upload.status_code == 503, upload.text  # a store error, never a 500
    assert error_variant(upload) == "StorageError"
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert response.json()["checks"]["database"] == {
        "state": "failed",
        "reason": "the database did not answer (StoreError)",
    }


async def _after_cache() -> None:
    """Past service-kit's readiness cache, so the next /readyz checks again."""
    await asyncio.sleep(DEFAULT_READINESS_CACHE + 0.1)


async def test_metrics_count_attestations_releases_and_denials(broker: Broker) -> None:
    document = await served_document(broker)
    guest = Guest(broker.sim, owner=broker.admin)
    stored = await broker.put(guest.store_key_path, os.urandom(32))
    check_answer(document, stored)
    other = Guest(broker.sim, owner=broker.admin)
    assert (await broker.put(other.store_key_path, os.urandom(32))).status_code == 200
    async with broker.guest_client() as client:
        no_token = await client.get(f"{RESOURCE_PREFIX}{guest.store_key_path}")
        check_answer(document, no_token)
        assert error_variant(no_token) == "TokenNotFound"
        attested = await guest.attest(client)
        check_answer(document, attested)
        assert attested.status_code == 200
        released = await client.get(f"{RESOURCE_PREFIX}{guest.store_key_path}")
        check_answer(document, released)
        assert released.status_code == 200
        denied = await client.get(f"{RESOURCE_PREFIX}{other.store_key_path}")
        check_answer(document, denied)
        assert error_variant(denied) == "PolicyDeny"
    async with broker.guest_client() as client:
        nonce = "A" * 43 + "="
        refused = await guest.attest(client, quote_nonce=nonce)
        check_answer(document, refused)
        assert refused.status_code == 401
    metrics = await broker.client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    attestations = samples(text, "tdx_kbs_attestations")
    assert {dict(k)["result"] for k in attestations} == set(ATTESTATION_RESULTS)
    assert attestations[(("result", "verified"),)] == 1
    assert attestations[(("result", "binding"),)] == 1
    assert sum(attestations.values()) == 2
    releases = samples(text, "tdx_kbs_resource_releases")
    assert {dict(k)["outcome"] for k in releases} == set(RELEASE_OUTCOMES)
    assert releases[(("outcome", "released"),)] == 1
    assert releases[(("outcome", "denied"),)] == 1
    assert releases[(("outcome", "no_token"),)] == 1
    assert sum(releases.values()) == 3
    assert samples(text, "tdx_kbs_policy_denials") == {(): 1.0}
    requests = samples(text, "tdx_kbs_http_requests")
    key = (("method", "GET"), ("route", "/kbs/v0/resource/{path}"), ("status", "401"))
    assert requests[key] == 2


async def test_error_answers_are_the_documents(broker: Broker) -> None:
    document = await served_document(broker)
    answers = [
        await broker.client.post(f"{KBS}/auth", content=b"{"),
        await broker.client.post(
            f"{KBS}/auth", json={"version": "0.1.0", "tee": "tdx", "extra-params": ""}
        ),
        await broker.client.post(f"{KBS}/attest", json={}),
        await broker.client.get(f"{KBS}/attestation-policy"),
        await broker.client.delete(f"{KBS}/reference-value/x"),
        await broker.client.get(f"{RESOURCE_PREFIX}a/b"),
        await broker.client.post(f"{RESOURCE_PREFIX}a/b/c", content=b"x"),
        await broker.put("a/b/c", b""),
        await broker.client.post(f"{KBS}/resource-policy", json={"policy": "!"}),
        await broker.set_policy("package other"),
    ]
    statuses = [a.status_code for a in answers]
    assert statuses == [400, 401, 401, 404, 404, 404, 401, 400, 401, 400]
    for response in answers:
        check_answer(document, response)
