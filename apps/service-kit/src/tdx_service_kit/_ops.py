"""`install_ops`: GET /healthz, /readyz, /metrics and /openapi.json on a service's app.

Requests are counted by route *pattern* (`/instance/{pubkey}`), never by raw path, so a client
cannot grow the label set by inventing paths: every path no route matches is one `unmatched`
label, every method outside the standard set one `OTHER`. When `PROMETHEUS_MULTIPROC_DIR` is set
(several workers), `/metrics` merges every worker's values with prometheus-client's
`MultiProcessCollector`.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json as jsonlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse, HTTPResponse, json

from ._install import RATE_LIMIT_EXEMPT_ATTRIBUTE

log = logging.getLogger("tdx_service_kit.ops")

OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")
UNMATCHED_ROUTE = "unmatched"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_CHECK_TIMEOUT = 2.0
DEFAULT_READINESS_CACHE = 1.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OPS_ATTRIBUTE = "tdx_ops"
GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
    "livemostrecent",
]  # fmt: skip


class OpsError(Exception):
    """The operations routes cannot be installed as asked (a bad document, a bad check)."""


class OpenApiDocumentError(OpsError):
    """The OpenAPI document is missing, not JSON, or not an OpenAPI 3.1 document."""


class CheckFailed(Exception):
    """Raised by a readiness check: `reason` is shown in /readyz, so it must hold no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CheckFunction = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ReadinessCheck:
    """One named dependency of /readyz: `check` returns when it answers, raises `CheckFailed`
    with a safe reason when it does not; it is given at most `timeout` seconds. A check made
    with `skipped(name, reason)` always reports `skipped` (and never fails readiness)."""

    name: str
    check: CheckFunction | None
    timeout: float = DEFAULT_CHECK_TIMEOUT
    skip_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise OpsError(f"a readiness check's name must be a plain word, not {self.name!r}")
        if self.timeout <= 0:
            raise OpsError(f"readiness check {self.name!r}: the timeout must be positive")
        if (self.check is None) == (self.skip_reason is None):
            raise OpsError(f"readiness check {self.name!r}: give a check or a skip reason")

    @classmethod
    def skipped(cls, name: str, reason: str) -> ReadinessCheck:
        """A dependency this configuration does not use (e.g. the PCCS under SKIP_TDX_AUTH)."""
        return cls(name=name, check=None, skip_reason=reason)


@dataclass(frozen=True)
class CheckResult:
    """The state of one check in one /readyz answer."""

    name: str
    state: Literal["ok", "failed", "skipped"]
    reason: str | None = None

    def to_object(self) -> dict[str, str]:
        obj: dict[str, str] = {"state": self.state}
        if self.reason is not None:
            obj["reason"] = self.reason
        return obj


async def _run_check(check: ReadinessCheck) -> CheckResult:
    if check.check is None:
        return CheckResult(check.name, "skipped", check.skip_reason)
    try:
        await asyncio.wait_for(check.check(), timeout=check.timeout)
    except CheckFailed as exc:
        return CheckResult(check.name, "failed", exc.reason)
    except TimeoutError:
        return CheckResult(check.name, "failed", f"no answer within {check.timeout:g} s")
    except Exception as exc:
        # The message may carry a DSN or a URL with credentials: only the class is shown.
        log.warning(
            "readiness check failed unexpectedly",
            extra={"check": check.name, "error_type": type(exc).__name__},
        )
        return CheckResult(check.name, "failed", f"check raised {type(exc).__name__}")
    return CheckResult(check.name, "ok")


class Readiness:
    """Runs the checks concurrently, one run at a time, its result reused for `cache_seconds`:
    a flood of /readyz (exempt from the rate limit) costs the database and PCCS at most one
    round of checks per period."""

    def __init__(
        self,
        checks: Sequence[ReadinessCheck],
        *,
        cache_seconds: float = DEFAULT_READINESS_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [check.name for check in checks]
        if len(set(names)) != len(names):
            raise OpsError(f"readiness check names must be distinct: {names}")
        self._checks = tuple(checks)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, tuple[CheckResult, ...]] | None = None

    async def results(self) -> tuple[CheckResult, ...]:
        """The current state of every check (cached for `cache_seconds`)."""
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            results = tuple(await asyncio.gather(*(_run_check(c) for c in self._checks)))
            self._last = (self._clock(), results)
            return results


@dataclass(frozen=True)
class OpenApiDocument:
    """An app's OpenAPI 3.1 document, checked for its shape once, serialized once."""

    document: Mapping[str, Any]
    body: bytes = field(repr=False)

    @classmethod
    def from_object(cls, document: Mapping[str, Any], *, with_ops: bool = True) -> OpenApiDocument:
        """Check `document` is OpenAPI 3.1 with paths; add the ops routes unless `with_ops` is
        False (then the document must describe them itself)."""
        doc: dict[str, Any] = copy.deepcopy(dict(document))
        version = doc.get("openapi")
        if not isinstance(version, str) or not version.startswith("3.1."):
            raise OpenApiDocumentError(f"not an OpenAPI 3.1 document (openapi: {version!r})")
        info = doc.get("info")
        if not isinstance(info, dict) or not isinstance(info.get("title"), str):
            raise OpenApiDocumentError("the document has no info.title")
        paths = doc.get("paths")
        if not isinstance(paths, dict) or not all(
            isinstance(p, str) and p.startswith("/") and isinstance(item, dict)
            for p, item in paths.items()
        ):
            raise OpenApiDocumentError("the document's paths must map '/...' to path items")
        if with_ops:
            _merge_ops(doc)
        missing = [p for p in OPS_PATHS if p not in doc["paths"]]
        if missing:
            raise OpenApiDocumentError(f"the document does not describe {missing}")
        body = jsonlib.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return cls(document=doc, body=body)

    @classmethod
    def from_package(cls, package: str, resource: str, *, with_ops: bool = True) -> OpenApiDocument:
        """Load the document shipped as `resource` in `package` (package data)."""
        try:
            raw = resources.files(package).joinpath(resource).read_bytes()
        except (OSError, ModuleNotFoundError) as exc:
            raise OpenApiDocumentError(f"cannot read {package}/{resource}: {exc}") from exc
        try:
            document = jsonlib.loads(raw)
        except ValueError as exc:
            raise OpenApiDocumentError(f"{package}/{resource} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise OpenApiDocumentError(f"{package}/{resource} is not a JSON object")
        return cls.from_object(document, with_ops=with_ops)


def _json_content(schema_ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": schema_ref}}}}


_ERROR_REF = "#/components/schemas/OpsError"
_OPS_SCHEMAS: dict[str, Any] = {
    "OpsError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "OpsHealth": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
        "additionalProperties": False,
    },
    "OpsCheck": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"enum": ["ok", "failed", "skipped"]},
            "reason": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "OpsReady": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"const": "ready"},
            "checks": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/OpsCheck"},
            },
        },
        "additionalProperties": False,
    },
    "OpsNotReady": {
        "type": "object",
        "required": ["error", "status", "checks", "failing"],
        "properties": {
            "error": {"type": "string"},
            "status": {"const": "not ready"},
            "checks": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/OpsCheck"},
            },
            "failing": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "additionalProperties": False,
    },
}


def _ops_paths() -> dict[str, Any]:
    too_many = {"description": "the client's connection cap", **_json_content(_ERROR_REF)}
    common = {
        "408": {"description": "the request deadline passed", **_json_content(_ERROR_REF)},
        "500": {"description": "an unexpected failure (logged)", **_json_content(_ERROR_REF)},
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "opsHealthz",
                "summary": "200 while the process serves",
                "responses": {
                    "200": {
                        "description": "serving",
                        **_json_content("#/components/schemas/OpsHealth"),
                    },
                    "503": too_many,
                    **common,
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "opsReadyz",
                "summary": "200 only while every dependency answers; 503 names those that do not",
                "responses": {
                    "200": {
                        "description": "ready",
                        **_json_content("#/components/schemas/OpsReady"),
                    },
                    "503": {
                        "description": "a dependency does not answer (or a connection cap)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/OpsNotReady"},
                                        {
                                            "$ref": _ERROR_REF,
                                            "not": {"required": ["failing"]},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    **common,
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "opsMetrics",
                "summary": "Prometheus text exposition",
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": too_many,
                    **common,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "opsOpenapi",
                "summary": "this document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "503": too_many,
                    **common,
                },
            }
        },
    }


def _merge_ops(doc: dict[str, Any]) -> None:
    paths: dict[str, Any] = doc["paths"]
    for path, item in _ops_paths().items():
        if path in paths:
            raise OpenApiDocumentError(f"{path} is added by the kit; leave it out of the document")
        paths[path] = item
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in _OPS_SCHEMAS.items():
        if name in schemas:
            raise OpenApiDocumentError(f"schema {name} is the kit's; rename the document's")
        schemas[name] = copy.deepcopy(schema)


class OpsMetrics:
    """The app's metric registry: the kit's request metrics and the app's own, side by side.

    Create the app's metrics with `counter`, `histogram` and `gauge` (names get the app's
    `namespace`), or register any collector on `registry`. In multiprocess mode every metric's
    values live in `PROMETHEUS_MULTIPROC_DIR` and are read from there at each scrape; a gauge
    then needs its `multiprocess_mode` (how the workers' values combine).
    """

    def __init__(self, namespace: str, *, multiproc_dir: str | None = None) -> None:
        if not namespace.replace("_", "").isalnum():
            raise OpsError(f"a metrics namespace must be letters, digits and _: {namespace!r}")
        self.namespace = namespace
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = self.counter(
            "http_requests", "HTTP requests answered, by route pattern, method and status",
            ("route", "method", "status"),
        )  # fmt: skip
        self.latency = self.histogram(
            "http_request_duration_seconds", "time from routing to the response, by route",
            ("route", "method"), buckets=LATENCY_BUCKETS,
        )  # fmt: skip

    @classmethod
    def from_environment(
        cls, namespace: str, environ: Mapping[str, str] = os.environ
    ) -> OpsMetrics:
        """Metrics in multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` names a directory."""
        directory = environ.get(MULTIPROC_ENV) or None
        if directory is not None and not Path(directory).is_dir():
            raise OpsError(f"{MULTIPROC_ENV} is not a directory: {directory}")
        return cls(namespace, multiproc_dir=directory)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(
            name, documentation, tuple(labels), namespace=self.namespace, registry=self.registry
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            name, documentation, tuple(labels), namespace=self.namespace,
            registry=self.registry, buckets=tuple(buckets),
        )  # fmt: skip

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        multiprocess_mode: GaugeMode = "livesum",
    ) -> Gauge:
        return Gauge(
            name, documentation, tuple(labels), namespace=self.namespace,
            registry=self.registry, multiprocess_mode=multiprocess_mode,
        )  # fmt: skip

    def mark_process_dead(self, pid: int) -> None:
        """Drop the live gauges of worker `pid` (call it when a worker exits); no-op otherwise."""
        if self.multiproc_dir is not None:
            mark_process_dead(pid, self.multiproc_dir)  # type: ignore[no-untyped-call]

    def exposition(self) -> bytes:
        """The Prometheus text of every metric (every worker's, in multiprocess mode)."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


@dataclass(frozen=True)
class Ops:
    """What `install_ops` put on the app: its metrics, readiness and document."""

    metrics: OpsMetrics
    readiness: Readiness
    openapi: OpenApiDocument


def ops_of(app: Sanic[Any, Any]) -> Ops:
    """The `Ops` installed on `app` (KeyError-free: `OpsError` if none)."""
    ops: Ops | None = getattr(app.ctx, _OPS_ATTRIBUTE, None)
    if ops is None:
        raise OpsError(f"install_ops was not called on {app.name}")
    return ops


def route_label(request: Request[Any, Any]) -> str:
    """The route pattern the request matched (`/instance/{pubkey}`), `unmatched` if none."""
    route = request.route
    if route is None:
        return UNMATCHED_ROUTE
    return openapi_path(route.path)


@functools.lru_cache(maxsize=1024)
def openapi_path(sanic_path: str) -> str:
    """Sanic's `instance/<pubkey:str>` as OpenAPI's `/instance/{pubkey}`."""
    parts = []
    for part in sanic_path.strip("/").split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":", 1)[0] + "}"
        parts.append(part)
    return "/" + "/".join(parts) if parts != [""] else "/"


def install_ops(
    app: Sanic[Any, Any],
    *,
    openapi: OpenApiDocument,
    checks: Sequence[ReadinessCheck] = (),
    metrics: OpsMetrics | None = None,
    readiness_cache_seconds: float = DEFAULT_READINESS_CACHE,
) -> Ops:
    """Add /healthz, /readyz, /metrics and /openapi.json and the request metrics to `app`.

    Call it after `install_common`. The four routes are exempt from the rate limit (probes and
    scrapes must not be refused because clients share an address), never from the connection
    cap or the request deadline (enforced before Sanic sees a request). `metrics` defaults to
    `OpsMetrics.from_environment` named after the app.
    """
    the_metrics = metrics or OpsMetrics.from_environment(app.name.replace("-", "_"))
    readiness = Readiness(checks, cache_seconds=readiness_cache_seconds)
    ops = Ops(metrics=the_metrics, readiness=readiness, openapi=openapi)
    setattr(app.ctx, _OPS_ATTRIBUTE, ops)
    exempt: frozenset[str] = getattr(app.ctx, RATE_LIMIT_EXEMPT_ATTRIBUTE, frozenset())
    setattr(app.ctx, RATE_LIMIT_EXEMPT_ATTRIBUTE, exempt | frozenset(OPS_PATHS))

    async def healthz(request: Request[Any, Any]) -> HTTPResponse:
        return json({"status": "ok"})

    async def readyz(request: Request[Any, Any]) -> HTTPResponse:
        results = await readiness.results()
        checks_obj = {r.name: r.to_object() for r in results}
        failing = [r.name for r in results if r.state == "failed"]
        if failing:
            body = {
                "error": "not ready: " + ", ".join(failing) + " not answering",
                "status": "not ready",
                "checks": checks_obj,
                "failing": failing,
            }
            return json(body, status=503)
        return json({"status": "ready", "checks": checks_obj})

    async def metrics_route(request: Request[Any, Any]) -> HTTPResponse:
        return HTTPResponse(the_metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    async def openapi_route(request: Request[Any, Any]) -> HTTPResponse:
        return HTTPResponse(openapi.body, content_type="application/json")

    app.add_route(healthz, "/healthz", methods=["GET"], name="ops_healthz")
    app.add_route(readyz, "/readyz", methods=["GET"], name="ops_readyz")
    app.add_route(metrics_route, "/metrics", methods=["GET"], name="ops_metrics")
    app.add_route(openapi_route, "/openapi.json", methods=["GET"], name="ops_openapi")

    async def _started(request: Request[Any, Any]) -> None:
        request.ctx.ops_started = time.perf_counter()

    # The label children, looked up once each: routes, methods and statuses are bounded sets.
    children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def _count(request: Request[Any, Any], response: BaseHTTPResponse) -> None:
        route = route_label(request)
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        key = (route, method, response.status)
        pair = children.get(key)
        if pair is None:
            pair = (
                the_metrics.requests.labels(route, method, str(response.status)),
                the_metrics.latency.labels(route, method),
            )
            children[key] = pair
        pair[0].inc()
        started: float | None = getattr(request.ctx, "ops_started", None)
        if started is not None:
            pair[1].observe(time.perf_counter() - started)

    # Before the rate limit (priority 1000) so a refused request is timed too.
    app.register_middleware(_started, "request", priority=2000)
    app.register_middleware(_count, "response", priority=-2000)
    return ops
