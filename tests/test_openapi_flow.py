"""End to end, issue 13's operations routes on the real programs: every answer the test gets
from the registry, the identity service, the key broker and tdx-sim, success and error,
validates against the `/openapi.json` that service serves (itself valid OpenAPI 3.1), the key
broker's answers to a whole KBS exchange (auth, attest, resource) included; each service's
`/healthz`, `/readyz` and `/metrics` answer; readiness follows the dependencies (the key broker
stopped: the identity service names it; the simulated platform and its PCCS stopped: the
identity service names the platform, the broker and the registry the PCCS); the metrics count
the flow (the lifecycle state, requests by route, the broker's attestations, releases and
policy denials).

One stack: conftest's `make_stack` (real tdx-sim, tdx-registry, identity-svc) and a real
tdx-kbs (`procs.kbs`) the identity service is pointed at; the KBS exchange is run by a second
simulated TD of the same platform (test_key_broker_flow's `sim_td`), whose RTMR3 holds the log
the test writes. No podman: the workload step's key fetch by the identity service is covered by
`apps/identity/tests` (`test_key_broker.py`, `test_ops.py`) and `tests/test_key_broker_flow.py`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from tdx_kbs_protocol import (
    KbsClient,
    KbsRefused,
    make_admin_token,
    open_store_key,
    seal_store_key,
    store_key_path,
)
from tdx_measure import IdentityEvent
from tdx_report_data import sign_instance_v2
from tdx_service_kit import DEFAULT_READINESS_CACHE
from tdx_service_kit.openapi_testing import (
    check_document,
    match_path,
    validate_request,
    validate_response,
)
from tests import procs
from tests.conftest import Stack
from tests.test_key_broker_flow import SimTd, sim_td

KBS = "/kbs/v0"
Samples = dict[tuple[tuple[str, str], ...], float]


class Document:
    """A service's served OpenAPI document, and the statuses of the answers checked against
    it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.seen: dict[int, int] = defaultdict(int)
        served = httpx.get(url + "/openapi.json", timeout=30)
        assert served.status_code == 200, (name, served.text)
        self.document: dict[str, Any] = served.json()
        check_document(self.document)

    def template(self, path: str) -> str:
        """The document's path of a request path. A Sanic `path` parameter (the broker's
        `{path}` of a resource and `{rest}` of an unknown endpoint) takes slashes, which an
        OpenAPI template does not match: those are matched here, the rest by service-kit."""
        paths = self.document["paths"]
        if path in paths:
            return path
        for template in sorted(paths, key=len, reverse=True):
            head, _, last = template.rpartition("/")
            if last in ("{path}", "{rest}") and "{" not in head and path.startswith(head + "/"):
                return str(template)
        return match_path(self.document, path)

    def check(
        self, request: httpx.Request, status: int, headers: httpx.Headers, raw: bytes
    ) -> None:
        """One answer as it came off the wire is one the document describes, and a JSON body
        the service accepted (2xx) is one the document describes too."""
        method, template = request.method, self.template(request.url.path)
        self.seen[status] += 1
        if 200 <= status < 300 and request.headers.get("content-type") == "application/json":
            validate_request(self.document, method, template, json.loads(request.content))
        if not raw:
            listed = self.document["paths"][template][method.lower()]["responses"]
            assert str(status) in listed, (self.name, method, template, status)
            assert "content" not in listed[str(status)], (self.name, method, template, status)
            return
        content_type = headers["content-type"].split(";")[0]
        body = json.loads(raw) if content_type == "application/json" else raw.decode()
        validate_response(self.document, method, template, status, body, content_type=content_type)


class Service:
    """A running service, reached through a client that checks every answer against the
    document the service serves."""

    def __init__(self, name: str, url: str) -> None:
        self.url = url
        self.doc = Document(name, url)
        self.client = httpx.Client(
            base_url=url, timeout=60, event_hooks={"response": [self._check]}
        )

    def _check(self, response: httpx.Response) -> None:
        raw = response.read()
        self.doc.check(response.request, response.status_code, response.headers, raw)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def metrics(self) -> dict[str, Samples]:
        """Every sample of /metrics, by family and labels."""
        response = self.get("/metrics")
        assert response.status_code == 200
        return {
            family.name: {
                tuple(sorted(s.labels.items())): s.value
                for s in family.samples
                if not s.name.endswith("_created")
            }
            for family in text_string_to_metric_families(response.text)
        }

    def readiness(self) -> httpx.Response:
        time.sleep(DEFAULT_READINESS_CACHE + 0.1)  # past service-kit's cache: the checks run again
        return self.get("/readyz")


class CheckedTransport(httpx.AsyncBaseTransport):
    """The KBS client's transport: every answer of the broker checked against its document."""

    def __init__(self, doc: Document) -> None:
        self._doc = doc
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        raw = await response.aread()
        await response.aclose()
        self._doc.check(request, response.status_code, response.headers, raw)
        return httpx.Response(response.status_code, headers=response.headers, content=raw)

    async def aclose(self) -> None:
        await self._inner.aclose()


def fetch_key(kbs: Service, td: SimTd) -> bytes:
    """The store key resource the broker releases to `td`, every answer checked."""

    async def get() -> bytes:
        client = KbsClient(kbs.url, timeout=30, transport=CheckedTransport(kbs.doc))
        try:
            return await client.get_resource(store_key_path(td.instance), td)
        finally:
            await client.aclose()

    return asyncio.run(get())


def public_pem(key: Ed25519PrivateKey, into: Path) -> Path:
    into.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return into


@contextmanager
def stack_with_broker(
    make_stack: Callable[..., Stack], tmp_path: Path, owner: Ed25519PrivateKey
) -> Iterator[tuple[Stack, procs.Program]]:
    """`make_stack`'s sim, registry and identity service, and a key broker (its admin key the
    owner's) that the identity service is restarted to use (KEY_BROKER_URL)."""
    stack = make_stack()
    root = tmp_path / "sim-state" / "root_ca.pem"
    kbs = procs.kbs(tmp_path, stack.sim.url, root, public_pem(owner, tmp_path / "owner.pub"))
    with procs.running(kbs):
        stack.identity.env = {**stack.identity.env, "KEY_BROKER_URL": kbs.url}
        stack.restart("identity")
        yield stack, kbs


def one(samples: Samples, **labels: str) -> float:
    return samples[tuple(sorted(labels.items()))]


def assert_ready(service: Service, *checks: str) -> None:
    """/readyz is 200 with exactly `checks`, each ok."""
    response = service.readiness()
    assert response.status_code == 200, (service.doc.name, response.text)
    expected = {name: {"state": "ok"} for name in checks}
    assert response.json() == {"status": "ready", "checks": expected}, service.doc.name


def assert_not_ready(service: Service, failing: list[str]) -> dict[str, Any]:
    response = service.readiness()
    assert response.status_code == 503, (service.doc.name, response.text)
    body: dict[str, Any] = response.json()
    assert body["failing"] == failing, (service.doc.name, body)
    return body


@pytest.mark.e2e
def test_every_answer_of_the_flow_is_the_documents_and_ops_follow_it(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    owner, operator = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    owner_pub = owner.public_key().public_bytes_raw()
    operator_pub = operator.public_key().public_bytes_raw()
    with stack_with_broker(make_stack, tmp_path, owner) as (stack, kbs_program):
        registry = Service("registry", stack.registry.url)
        identity = Service("identity", stack.identity.url)
        kbs = Service("kbs", kbs_program.url)
        sim = Service("tdx-sim", stack.sim.url)
        services = (registry, identity, kbs, sim)

        # Health and readiness of the stack as started.
        for service in services:
            assert service.get("/healthz").json() == {"status": "ok"}
            assert "http_requests_total" in service.get("/metrics").text
        assert_ready(registry, "database", "pccs")
        assert_ready(identity, "registry", "key_broker", "platform")
        assert_ready(kbs, "database", "pccs")
        assert_ready(sim)
        fresh = identity.metrics()
        assert one(fresh["tdx_identity_lifecycle_state"], state="fresh") == 1.0

        # The identity service: its facts, a bad challenge, the registrations.
        instance = bytes.fromhex(identity.get("/instance/pubkey").json()["pubkey"])
        assert identity.get("/instance/attestation", params={"nonce": "zz"}).status_code == 400
        nonce = secrets.token_hex(32)
        assert identity.get("/instance/attestation", params={"nonce": nonce}).status_code == 200
        assert identity.get("/instance/eventlog").status_code == 200
        assert identity.get("/instance/state").json()["workload"] == "stopped"
        assert identity.get("/workload/ssh-host-key").status_code == 200
        body = {
            "pubkey": operator_pub.hex(),
            "signature": sign_instance_v2(operator, "operator", instance).hex(),
        }
        registered = identity.post("/operator/register", json=body)
        assert registered.status_code == 200, registered.text
        token = registered.json()["owner_token"]
        assert identity.post("/operator/register", json=body).status_code == 400
        body = {
            "pubkey": owner_pub.hex(),
            "signature": sign_instance_v2(owner, "owner", instance).hex(),
        }
        refused = identity.post("/owner/register", json=body, headers={"x-token": "no"})
        assert refused.status_code == 401
        accepted = identity.post("/owner/register", json=body, headers={"x-token": token})
        assert accepted.status_code == 200, accepted.text
        unsigned = identity.post("/workload/configure", json={"seq": 1})
        assert unsigned.status_code == 401
        after = identity.metrics()
        assert one(after["tdx_identity_lifecycle_state"], state="owner_registered") == 1.0
        assert one(after["tdx_identity_registry_comparison"], status="agreed") == 1.0
        requests = after["tdx_identity_http_requests"]
        assert one(requests, route="/operator/register", method="POST", status="200") == 1.0
        assert one(requests, route="/operator/register", method="POST", status="400") == 1.0
        assert one(requests, route="/owner/register", method="POST", status="401") == 1.0

        # The registry: the record, an unknown instance, a challenge, a malformed registration.
        assert registry.get(f"/instance/{instance.hex()}").status_code == 200
        assert registry.get(f"/instance/{'ab' * 32}").status_code == 404
        assert registry.get("/challenge").status_code == 200
        assert registry.post("/register", content=b"{").status_code == 400

        # The key broker: a store key uploaded for a second TD of the platform, released to
        # that TD's evidence (auth, attest, resource, each answer checked), and refusals.
        shutil.copytree(tmp_path / "sim-state" / "pki", tmp_path / "sim2-state" / "pki")
        sim2 = procs.sim(tmp_path, state=tmp_path / "sim2-state")
        with procs.running(sim2):
            other = sim_td(sim2, operator_pub, owner_pub)
            key = secrets.token_bytes(32)
            path = f"{KBS}/resource/{store_key_path(other.instance)}"
            admin = {"Authorization": f"Bearer {make_admin_token(owner)}"}
            envelope = seal_store_key(owner, other.instance, key)
            assert kbs.post(path, content=envelope, headers=admin).status_code == 200
            assert kbs.post(path, content=b"x").status_code == 401
            released = fetch_key(kbs, other)
            assert (
                open_store_key(released, owner_pubkey=owner_pub, instance_pubkey=other.instance)
                == key
            )
            other.extend(
                IdentityEvent("owner", Ed25519PrivateKey.generate().public_key().public_bytes_raw())
            )
            with pytest.raises(KbsRefused) as denied:
                fetch_key(kbs, other)
            assert (denied.value.status, denied.value.variant) == (401, "PolicyDeny")
        auth = {"version": "0.4.0", "tee": "tdx", "extra-params": ""}
        assert kbs.post(f"{KBS}/auth", json=auth).status_code == 200
        assert kbs.post(f"{KBS}/attest", content=b"{").status_code == 400
        assert kbs.post(f"{KBS}/auth", json=auth | {"tee": "sev"}).status_code == 401
        assert kbs.get(path).status_code == 401
        assert kbs.get(f"{KBS}/reference-value/x").status_code == 404
        broker = kbs.metrics()
        assert one(broker["tdx_kbs_attestations"], result="verified") == 2.0
        assert one(broker["tdx_kbs_attestations"], result="malformed") == 1.0
        assert one(broker["tdx_kbs_resource_releases"], outcome="released") == 1.0
        assert one(broker["tdx_kbs_resource_releases"], outcome="denied") == 1.0
        assert one(broker["tdx_kbs_resource_releases"], outcome="no_token") == 1.0
        assert broker["tdx_kbs_policy_denials"] == {(): 1.0}

        # The broker stopped: the identity service is not ready, naming it.
        kbs_program.stop()
        body_ = assert_not_ready(identity, ["key_broker"])
        assert body_["checks"]["registry"] == {"state": "ok"}
        kbs_program.start()
        assert_ready(identity, "registry", "key_broker", "platform")

        # The simulated platform (and its PCCS) stopped: each names what it depends on.
        stack.sim.stop()
        assert_not_ready(identity, ["platform"])
        assert_not_ready(kbs, ["pccs"])
        assert_not_ready(registry, ["pccs"])

        for service in (registry, identity, kbs):
            successes = sum(n for status, n in service.doc.seen.items() if status < 300)
            errors = sum(n for status, n in service.doc.seen.items() if 400 <= status < 600)
            assert successes > 0 and errors > 0, (service.doc.name, dict(service.doc.seen))
        for service in services:
            service.client.close()
