"""The identity service's operations routes (service-kit's `install_ops`): `GET /healthz`,
`GET /readyz` over what the service depends on, `GET /metrics` with its own metrics, and
`GET /openapi.json` (the `openapi.json` shipped beside this module).

Readiness checks, each under service-kit's short timeout:

- `registry`: the registry's `GET /healthz` answers 200;
- `key_broker` (only with `--key-broker-url`): the key broker's `GET /healthz` answers 200;
- `platform`: RTMR3 can be read (the quote provider of the same TD: configfs-tsm's sysfs, or
  tdx-sim).

A failed check's reason names the dependency and the kind of failure, never its URL (which may
carry credentials). Metrics beside service-kit's requests and latencies, read from the service at
each scrape (the service is one process: it owns RTMR3 and the workload, so nothing is shared
between processes):

- `tdx_identity_lifecycle_state{state}`: 1 for the current lifecycle state, 0 for the others;
- `tdx_identity_registry_comparison{status}`: 1 for where the start-up comparison stands;
- `tdx_identity_workload_status{status}`: 1 for `stopped`, `running`, `refused` or `locked`;
- `tdx_identity_workload_recoveries_total{outcome}`: `kept`, `restarted` (a workload restart),
  `refused`;
- `tdx_identity_key_broker_fetches_total{outcome}`: `workload.key_broker.FETCH_OUTCOMES`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sanic import Sanic

from tdx_identity.core.comparison import ComparisonStatus
from tdx_identity.core.lifecycle import Lifecycle
from tdx_identity.core.ports import RtmrDevice, WorkloadManager
from tdx_identity.core.service import IdentityService
from tdx_identity.exceptions import RtmrDeviceError
from tdx_identity.routes._common import workload_status
from tdx_identity.workload.key_broker import FETCH_OUTCOMES
from tdx_identity.workload.manager import RECOVERY_OUTCOMES
from tdx_service_kit import (
    CheckFailed,
    OpenApiDocument,
    Ops,
    OpsMetrics,
    ReadinessCheck,
    install_ops,
)

__all__ = [
    "NAMESPACE",
    "IdentityCollector",
    "health_check",
    "install_identity_ops",
    "openapi_document",
    "platform_check",
]

NAMESPACE = "tdx_identity"
HEALTH_TIMEOUT = 1.5
"""Seconds a dependency's /healthz may take (service-kit gives each check 2 s)."""
WORKLOAD_STATUSES = ("stopped", "running", "refused", "locked")


@runtime_checkable
class CountsRecoveries(Protocol):
    """A workload manager that counts its recoveries (`PodmanWorkloadManager`)."""

    def recovery_outcomes(self) -> Mapping[str, int]: ...


@runtime_checkable
class CountsFetches(Protocol):
    """A store key source that counts its fetches from the key broker (`KbsKeyProvider`)."""

    def fetch_outcomes(self) -> Mapping[str, int]: ...


def openapi_document() -> OpenApiDocument:
    """The identity service's OpenAPI 3.1 document, with service-kit's four routes."""
    return OpenApiDocument.from_package("tdx_identity", "openapi.json")


def health_check(
    name: str,
    what: str,
    base_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ReadinessCheck:
    """Ready while `GET {base_url}/healthz` answers 200."""
    url = base_url.rstrip("/") + "/healthz"

    async def check() -> None:
        try:
            async with httpx.AsyncClient(
                timeout=HEALTH_TIMEOUT, transport=transport, follow_redirects=False
            ) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise CheckFailed(f"{what} did not answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise CheckFailed(f"{what} answered /healthz with HTTP {response.status_code}")

    return ReadinessCheck(name=name, check=check)


def platform_check(rtmr: RtmrDevice) -> ReadinessCheck:
    """Ready while RTMR3 can be read."""

    async def check() -> None:
        try:
            await rtmr.read_rtmr3()
        except RtmrDeviceError:
            raise CheckFailed("RTMR3 could not be read (RtmrDeviceError)") from None

    return ReadinessCheck(name="platform", check=check)


class IdentityCollector:
    """The service's own metrics, read from it at each scrape (a prometheus-client collector)."""

    def __init__(
        self,
        service: IdentityService,
        workload: WorkloadManager,
        keys: object,
        *,
        namespace: str = NAMESPACE,
    ) -> None:
        self._service = service
        self._workload = workload
        self._keys = keys
        self._ns = namespace

    def collect(self) -> Iterator[Metric]:
        current = self._service.state.lifecycle
        yield _one_hot(
            f"{self._ns}_lifecycle_state",
            "1 for the instance's current lifecycle state, 0 for the others",
            "state",
            [lifecycle.value for lifecycle in Lifecycle],
            current.value,
        )
        yield _one_hot(
            f"{self._ns}_registry_comparison",
            "1 for where the start-up comparison with the registry stands",
            "status",
            [status.value for status in ComparisonStatus],
            self._service.comparison.status.value,
        )
        status, _ = workload_status(self._service, self._workload)
        yield _one_hot(
            f"{self._ns}_workload_status",
            "1 for the workload's status (as GET /instance/state says it)",
            "status",
            list(WORKLOAD_STATUSES),
            status,
        )
        recoveries = (
            self._workload.recovery_outcomes()
            if isinstance(self._workload, CountsRecoveries)
            else {}
        )
        yield _counts(
            f"{self._ns}_workload_recoveries",
            "Recoveries of the committed workload at start, by outcome (restarted: the "
            "workload was started again)",
            RECOVERY_OUTCOMES,
            recoveries,
        )
        fetches = self._keys.fetch_outcomes() if isinstance(self._keys, CountsFetches) else {}
        yield _counts(
            f"{self._ns}_key_broker_fetches",
            "Fetches of the store key from the owner's key broker, by outcome",
            FETCH_OUTCOMES,
            fetches,
        )


def _one_hot(
    name: str, documentation: str, label: str, values: list[str], current: str
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value in values:
        family.add_metric([value], 1.0 if value == current else 0.0)
    return family


def _counts(
    name: str, documentation: str, outcomes: tuple[str, ...], counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["outcome"])
    for outcome in outcomes:
        family.add_metric([outcome], float(counts.get(outcome, 0)))
    return family


def install_identity_ops(
    app: Sanic[Any, Any],
    *,
    service: IdentityService,
    workload: WorkloadManager,
    keys: object,
    rtmr: RtmrDevice,
    registry_url: str,
    key_broker_url: str | None,
    key_broker_transport: httpx.AsyncBaseTransport | None = None,
) -> Ops:
    """Install the four routes on the identity app: the checks above (the key broker reached
    through `key_broker_transport` when given, as the store key is), and the service's metrics
    beside service-kit's (never in multiprocess mode: the service is one process)."""
    checks = [health_check("registry", "the registry", registry_url)]
    if key_broker_url is not None:
        checks.append(
            health_check(
                "key_broker", "the key broker", key_broker_url, transport=key_broker_transport
            )
        )
    checks.append(platform_check(rtmr))
    metrics = OpsMetrics(NAMESPACE)
    metrics.registry.register(IdentityCollector(service, workload, keys))
    return install_ops(app, openapi=openapi_document(), checks=checks, metrics=metrics)
