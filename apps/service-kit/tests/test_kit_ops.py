"""install_ops over real HTTP: health, readiness, metrics (single and multiprocess), OpenAPI, and
the test helpers that check a document and responses against it."""

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from tdx_service_kit import (
    CheckFailed,
    HttpLimits,
    NotFound,
    OpenApiDocument,
    OpenApiDocumentError,
    OpsError,
    OpsMetrics,
    RateLimit,
    Readiness,
    ReadinessCheck,
    install_common,
    install_ops,
    ops_of,
)
from tdx_service_kit.openapi_testing import (
    DocumentMismatch,
    RequestMismatch,
    ResponseMismatch,
    assert_routes_match,
    check_document,
    match_path,
    validate_exchange,
    validate_request,
    validate_response,
)
from tdx_service_kit.testing import serve

DB_PASSWORD = "hunter2-db-password"

ITEM_SCHEMA = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{4}$"}},
    "additionalProperties": False,
}


def error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "kit test", "version": "1"},
    "paths": {
        "/item/{item_id}": {
            "get": {
                "operationId": "getItem",
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the item",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                        },
                    },
                    "404": error_response("no such item"),
                    "429": error_response("rate limited"),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Item": ITEM_SCHEMA,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
                "additionalProperties": False,
            },
        }
    },
}


class Flags:
    """What the readiness checks of the test app answer."""

    def __init__(self) -> None:
        self.db_up = True
        self.calls = 0


def make_app(
    name: str,
    flags: Flags,
    *,
    rate: RateLimit | None = None,
    metrics: OpsMetrics | None = None,
    cache_seconds: float = 0.0,
) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name)
    install_common(app, limits=HttpLimits(max_body_bytes=1024), rate_limit=rate)

    async def database() -> None:
        flags.calls += 1
        if not flags.db_up:
            raise ConnectionError(f"postgresql://registry:{DB_PASSWORD}@db/registry refused")

    async def pccs() -> None:
        await asyncio.sleep(30)

    checks = [
        ReadinessCheck("database", database),
        ReadinessCheck("pccs", pccs, timeout=0.2),
        ReadinessCheck.skipped("broker", "not configured"),
    ]
    if name.endswith("-nopccs"):
        checks = [checks[0], checks[2]]
    ops = install_ops(
        app,
        openapi=OpenApiDocument.from_object(DOCUMENT),
        checks=checks,
        metrics=metrics,
        readiness_cache_seconds=cache_seconds,
    )
    fetched = ops.metrics.counter("items_fetched", "items answered", ("found",))

    @app.get("/item/<item_id:str>")
    async def item(request: Request, item_id: str) -> HTTPResponse:
        if item_id == "0000":
            fetched.labels("no").inc()
            raise NotFound("no such item")
        fetched.labels("yes").inc()
        return json({"id": item_id})

    return app


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_healthz_answers_ok(app_name: str) -> None:
    async with serve(make_app(app_name, Flags())) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_the_failing_and_timed_out_checks_without_secrets(
    app_name: str,
) -> None:
    flags = Flags()
    flags.db_up = False
    async with serve(make_app(app_name, flags)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["database", "pccs"]
    assert "database" in body["error"] and "pccs" in body["error"]
    assert body["checks"]["database"] == {
        "state": "failed",
        "reason": "check raised ConnectionError",
    }
    assert body["checks"]["pccs"] == {"state": "failed", "reason": "no answer within 0.2 s"}
    assert body["checks"]["broker"] == {"state": "skipped", "reason": "not configured"}
    assert DB_PASSWORD not in response.text
    validate_response(OpenApiDocument.from_object(DOCUMENT), "GET", "/readyz", 503, body)


async def test_readyz_is_ready_when_every_check_answers(app_name: str) -> None:
    app = make_app(app_name + "-nopccs", Flags())
    async with serve(app) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": {"state": "ok"},
            "broker": {"state": "skipped", "reason": "not configured"},
        },
    }
    validate_response(ops_of(app).openapi, "GET", "/readyz", 200, response.json())


async def test_readyz_goes_back_to_ready_and_reports_a_check_failed_reason(app_name: str) -> None:
    state = {"up": False}

    async def pccs() -> None:
        if not state["up"]:
            raise CheckFailed("the PCCS answered 502")

    readiness = Readiness([ReadinessCheck("pccs", pccs)], cache_seconds=0)
    first = await readiness.results()
    assert [(r.state, r.reason) for r in first] == [("failed", "the PCCS answered 502")]
    state["up"] = True
    assert [r.state for r in await readiness.results()] == ["ok"]


async def test_readyz_floods_cost_one_round_of_checks_per_period() -> None:
    calls = 0
    now = [100.0]

    async def database() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)

    readiness = Readiness(
        [ReadinessCheck("database", database)], cache_seconds=1.0, clock=lambda: now[0]
    )
    await asyncio.gather(*(readiness.results() for _ in range(50)))
    assert calls == 1
    now[0] += 1.5
    await readiness.results()
    assert calls == 2


def test_readiness_check_rejects_bad_declarations() -> None:
    async def noop() -> None:
        return None

    with pytest.raises(OpsError):
        ReadinessCheck("bad name!", noop)
    with pytest.raises(OpsError):
        ReadinessCheck("db", noop, timeout=0)
    with pytest.raises(OpsError):
        Readiness([ReadinessCheck("db", noop), ReadinessCheck("db", noop)])


async def test_metrics_count_by_route_pattern_with_one_label_for_unknown_paths(
    app_name: str,
) -> None:
    async with serve(make_app(app_name, Flags())) as url, httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/item/abcd")).status_code == 200
        assert (await client.get(f"{url}/item/0000")).status_code == 404
        for n in range(20):
            assert (await client.get(f"{url}/attacker/{n}")).status_code == 404
        assert (await client.request("BREW", f"{url}/item/abcd")).status_code == 405
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    prefix = app_name.replace("-", "_")
    total = f"{prefix}_http_requests_total"
    assert found[(total, (("method", "GET"), ("route", "/item/{item_id}"), ("status", "200")))] == 1
    assert found[(total, (("method", "GET"), ("route", "/item/{item_id}"), ("status", "404")))] == 1
    assert found[(total, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 20
    assert not any("attacker" in str(key) for key in found)
    assert not any(("method", "BREW") in key[1] for key in found)
    count = f"{prefix}_http_request_duration_seconds_count"
    assert found[(count, (("method", "GET"), ("route", "/item/{item_id}")))] == 2
    assert found[(f"{prefix}_items_fetched_total", (("found", "yes"),))] == 1
    assert found[(f"{prefix}_items_fetched_total", (("found", "no"),))] == 1


async def test_ops_routes_are_exempt_from_the_rate_limit_but_others_are_not(app_name: str) -> None:
    app = make_app(app_name + "-nopccs", Flags(), rate=RateLimit(per_second=0.01, burst=2))
    async with serve(app) as url, httpx.AsyncClient() as client:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json") * 5:
            assert (await client.get(f"{url}{path}")).status_code == 200, path
        statuses = [(await client.get(f"{url}/item/abcd")).status_code for _ in range(3)]
        metrics = (await client.get(f"{url}/metrics")).text
    assert statuses == [200, 200, 429]
    total = f"{app.name.replace('-', '_')}_http_requests_total"
    found = samples(metrics)
    assert found[(total, (("method", "GET"), ("route", "/item/{item_id}"), ("status", "429")))] == 1


async def test_ops_routes_keep_the_connection_cap(app_name: str) -> None:
    app: Sanic[Any, Any] = Sanic(app_name)
    install_common(
        app, limits=HttpLimits(max_body_bytes=1024, max_connections_per_client=1), rate_limit=None
    )
    install_ops(app, openapi=OpenApiDocument.from_object(DOCUMENT))
    async with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            async with httpx.AsyncClient() as client:
                second = await client.get(f"{url}/healthz")
        finally:
            writer.close()
    assert second.status_code == 503
    assert "too many connections" in second.json()["error"]


async def test_openapi_json_serves_the_document_with_the_ops_routes(app_name: str) -> None:
    app = make_app(app_name, Flags())
    async with serve(app) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/openapi.json")
        item = await client.get(f"{url}/item/abcd")
        missing = await client.get(f"{url}/item/0000")
        health = await client.get(f"{url}/healthz")
    document = response.json()
    assert response.status_code == 200
    assert set(document["paths"]) == {
        "/item/{item_id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    check_document(document)
    assert_routes_match(app, document)
    validate_response(document, "GET", "/item/abcd", 200, item.json())
    validate_response(document, "GET", "/item/0000", 404, missing.json())
    validate_response(document, "GET", "/healthz", 200, health.json())


def test_validate_response_refuses_what_the_document_does_not_describe() -> None:
    document = OpenApiDocument.from_object(DOCUMENT)
    with pytest.raises(ResponseMismatch, match="does not match"):
        validate_response(document, "GET", "/item/abcd", 200, {"id": "abcd", "extra": 1})
    with pytest.raises(ResponseMismatch, match="does not list"):
        validate_response(document, "GET", "/item/abcd", 500, {"error": "internal error"})
    with pytest.raises(ResponseMismatch, match="no POST"):
        validate_response(document, "POST", "/item/abcd", 200, {"id": "abcd"})
    with pytest.raises(ResponseMismatch, match="no path"):
        validate_response(document, "GET", "/nothing", 200, {})
    assert match_path(document, "/item/00ff") == "/item/{item_id}"
    assert match_path(document, "/healthz") == "/healthz"


def test_route_check_names_undocumented_and_unrouted_operations(app_name: str) -> None:
    app = make_app(app_name, Flags())

    @app.post("/undocumented")
    async def undocumented(request: Request) -> HTTPResponse:
        return json({})

    document = OpenApiDocument.from_object(
        {**DOCUMENT, "paths": {**DOCUMENT["paths"], "/ghost": {"get": {"responses": {}}}}}
    )
    with pytest.raises(DocumentMismatch) as caught:
        assert_routes_match(app, document)
    assert "('POST', '/undocumented')" in str(caught.value)
    assert "('GET', '/ghost')" in str(caught.value)


def test_check_document_refuses_an_invalid_document() -> None:
    broken = {**DOCUMENT, "paths": {"/x": {"get": {"responses": {"200": {"content": {}}}}}}}
    with pytest.raises(DocumentMismatch):
        check_document(OpenApiDocument.from_object(broken))


def test_document_loading_refuses_what_is_not_openapi_3_1(tmp_path: Path) -> None:
    with pytest.raises(OpenApiDocumentError, match=r"3\.1"):
        OpenApiDocument.from_object({**DOCUMENT, "openapi": "3.0.3"})
    with pytest.raises(OpenApiDocumentError, match="paths"):
        OpenApiDocument.from_object({**DOCUMENT, "paths": {"no-slash": {}}})
    with pytest.raises(OpenApiDocumentError, match="added by the kit"):
        OpenApiDocument.from_object({**DOCUMENT, "paths": {"/healthz": {}}})
    with pytest.raises(OpenApiDocumentError, match="cannot read"):
        OpenApiDocument.from_package("tdx_service_kit", "no-such.json")
    with pytest.raises(OpenApiDocumentError, match="does not describe"):
        OpenApiDocument.from_object(DOCUMENT, with_ops=False)


def test_metrics_from_environment_checks_the_multiprocess_directory(tmp_path: Path) -> None:
    assert OpsMetrics.from_environment("svc", {}).multiproc_dir is None
    assert OpsMetrics.from_environment(
        "svc", {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    ).multiproc_dir == str(tmp_path)
    with pytest.raises(OpsError, match="not a directory"):
        OpsMetrics.from_environment("svc", {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "none")})


WORKER = textwrap.dedent(
    """
    import sys
    from tdx_service_kit import OpsMetrics
    metrics = OpsMetrics.from_environment("mp")
    metrics.requests.labels("/item/{item_id}", "GET", "200").inc(int(sys.argv[1]))
    metrics.gauge("busy", "busy workers").inc()
    """
)


def test_multiprocess_exposition_sums_every_workers_values(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", WORKER, str(count)], env=env, check=True)
    reader = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tdx_service_kit import OpsMetrics;"
            "import sys; sys.stdout.buffer.write(OpsMetrics.from_environment('mp').exposition())",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    found = samples(reader.stdout.decode())
    key = (
        "mp_http_requests_total",
        (("method", "GET"), ("route", "/item/{item_id}"), ("status", "200")),
    )
    assert found[key] == 7
    assert found[("mp_busy", ())] == 2


def test_a_dead_workers_live_gauges_are_dropped(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = subprocess.run(
        [sys.executable, "-c", WORKER + "\nimport os; print(os.getpid())", "1"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    metrics = OpsMetrics(namespace="mp", multiproc_dir=str(tmp_path))
    assert samples(metrics.exposition().decode())[("mp_busy", ())] == 1
    metrics.mark_process_dead(int(worker.stdout))
    found = samples(metrics.exposition().decode())
    assert ("mp_busy", ()) not in found
    key = (
        "mp_http_requests_total",
        (("method", "GET"), ("route", "/item/{item_id}"), ("status", "200")),
    )
    assert found[key] == 1


async def test_validate_exchange_checks_raw_responses_and_unknown_paths(app_name: str) -> None:
    app = make_app(app_name, Flags())
    document = ops_of(app).openapi
    async with serve(app) as url, httpx.AsyncClient() as client:
        answers = [
            await client.get(f"{url}{path}")
            for path in ("/item/abcd", "/metrics", "/nowhere", "/openapi.json")
        ]
        wrong_method = await client.post(f"{url}/item/abcd")
    for answer in [*answers, wrong_method]:
        validate_exchange(
            document,
            answer.request.method,
            answer.request.url.path,
            answer.status_code,
            answer.headers["content-type"],
            answer.content,
        )
    with pytest.raises(ResponseMismatch, match="undocumented"):
        validate_exchange(document, "GET", "/nowhere", 200, "application/json", b"{}")
    with pytest.raises(ResponseMismatch, match="not an error body"):
        validate_exchange(document, "GET", "/nowhere", 404, "text/html", b"<h1>404</h1>")
    with pytest.raises(ResponseMismatch, match="does not decode"):
        validate_exchange(document, "GET", "/item/abcd", 200, "application/json", b"{")


def test_validate_request_checks_accepted_bodies_only() -> None:
    document = OpenApiDocument.from_object(
        {
            **DOCUMENT,
            "paths": {
                **DOCUMENT["paths"],
                "/item": {
                    "post": {
                        "requestBody": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            }
                        },
                        "responses": {
                            "200": error_response("stored"),
                            "400": error_response("refused"),
                        },
                    }
                },
            },
        }
    )
    validate_request(document, "POST", "/item", {"id": "abcd"})
    with pytest.raises(RequestMismatch, match="refuses"):
        validate_request(document, "POST", "/item", {"id": "abcd", "extra": True})
    ok = b'{"error": "stored"}'
    validate_exchange(
        document, "POST", "/item", 200, "application/json", ok, request_body=b'{"id": "abcd"}'
    )
    with pytest.raises(RequestMismatch, match="refuses"):
        validate_exchange(
            document, "POST", "/item", 200, "application/json", ok, request_body=b'{"id": 1}'
        )
    with pytest.raises(RequestMismatch, match="not JSON"):
        validate_exchange(document, "POST", "/item", 200, "application/json", ok, request_body=b"{")
    validate_exchange(document, "POST", "/item", 400, "application/json", ok, request_body=b"{")
