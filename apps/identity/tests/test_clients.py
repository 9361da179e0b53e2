"""The HTTP edges: the mock TDX quote source and the registry client, over httpx mock transports."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from tdx_identity.core.ports import RegistrationRequest, RegistryRecord
from tdx_identity.exceptions import (
    NoQuoteSourceError,
    NoRtmrDeviceError,
    QuoteSourceError,
    RegistryRecordMalformed,
    RegistryRejected,
    RegistryUnavailable,
)
from tdx_identity.platform import (
    ConfigfsTsmQuoteSource,
    MockTdxQuoteSource,
    PlatformSettings,
    SimRtmrDevice,
    SysfsRtmrDevice,
    select_platform,
)
from tdx_identity.registry_client import HttpRegistryClient
from tdx_measure import BootEvent, EventLog, Transition, WorkloadEvent
from tdx_report_data import IdentityInfo

REPORT_DATA = bytes(range(64))


async def test_mock_tdx_source_gets_the_quote_for_the_report_data() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=b"QUOTE")

    source = MockTdxQuoteSource("http://sim:3010/", transport=httpx.MockTransport(handler))
    assert await source.get_quote(REPORT_DATA) == b"QUOTE"
    assert seen == [f"/attest/{REPORT_DATA.hex()}"]


@pytest.mark.parametrize(
    "response", [httpx.Response(500, text="boom"), httpx.Response(404), httpx.Response(200)]
)
async def test_mock_tdx_source_errors_are_named(response: httpx.Response) -> None:
    source = MockTdxQuoteSource("http://sim", transport=httpx.MockTransport(lambda _: response))
    with pytest.raises(QuoteSourceError, match="mock TDX"):
        await source.get_quote(REPORT_DATA)


async def test_mock_tdx_source_unreachable_is_a_quote_source_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    source = MockTdxQuoteSource("http://sim", transport=httpx.MockTransport(refuse))
    with pytest.raises(QuoteSourceError, match="unreachable"):
        await source.get_quote(REPORT_DATA)


async def test_report_data_must_be_64_bytes() -> None:
    source = MockTdxQuoteSource("http://sim")
    with pytest.raises(ValueError, match="64 bytes"):
        await source.get_quote(b"short")


def platform_settings(
    tsm: Path, rtmr: Path, mock_tdx_url: str | None = "http://sim"
) -> PlatformSettings:
    return PlatformSettings(
        configfs_tsm_path=tsm, rtmr_sysfs_path=rtmr, mock_tdx_url=mock_tdx_url, quote_timeout=5.0
    )


def test_the_kernel_platform_is_preferred_when_configfs_tsm_exists(tmp_path: Path) -> None:
    register_file = tmp_path / "rtmr3"
    register_file.write_bytes(bytes(48))
    platform = select_platform(platform_settings(tmp_path, register_file))
    source, device = platform.quote_source, platform.rtmr_device
    assert platform.name == "kernel"
    assert isinstance(source, ConfigfsTsmQuoteSource) and source.root == tmp_path
    assert isinstance(device, SysfsRtmrDevice) and device.path == register_file


def test_the_simulator_gives_both_quotes_and_rtmr3_without_configfs_tsm(tmp_path: Path) -> None:
    register_file = tmp_path / "rtmr3"
    register_file.write_bytes(bytes(48))
    platform = select_platform(platform_settings(tmp_path / "absent", register_file, "http://sim/"))
    source, device = platform.quote_source, platform.rtmr_device
    assert platform.name == "tdx-sim"
    assert isinstance(source, MockTdxQuoteSource) and source.base_url == "http://sim"
    assert isinstance(device, SimRtmrDevice) and device.base_url == "http://sim"


def test_kernel_quotes_without_the_kernel_rtmr3_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NoRtmrDeviceError, match=r"6\.16"):
        select_platform(platform_settings(tmp_path, tmp_path / "absent"))


def test_no_platform_is_a_clear_startup_error(tmp_path: Path) -> None:
    settings = platform_settings(tmp_path / "absent", tmp_path / "absent", None)
    with pytest.raises(NoQuoteSourceError, match="MOCK_TDX_URL") as raised:
        select_platform(settings)
    assert isinstance(raised.value, NoRtmrDeviceError)


async def test_configfs_tsm_failure_is_a_quote_source_error_and_cleans_up(tmp_path: Path) -> None:
    # A plain directory lacks the kernel's generation/outblob attributes.
    source = ConfigfsTsmQuoteSource(tmp_path)
    with pytest.raises(QuoteSourceError, match="configfs-tsm"):
        await source.get_quote(REPORT_DATA)


IDENTITY = IdentityInfo(b"\x01" * 32, b"\x02" * 64, b"\x03" * 64)
REQUEST = RegistrationRequest(
    b"\x0a" * 32, b"\x0b" * 16, b"quote-bytes", IDENTITY, None, b"\x0c" * 32, b"\x0d" * 64
)


async def test_registry_client_posts_the_api_body() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/register" and request.method == "POST"
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"status": "ok"})

    client = HttpRegistryClient("http://reg:3000/", transport=httpx.MockTransport(handler))
    await client.register(REQUEST)
    assert bodies == [
        {
            "instance_pubkey": "0a" * 32,
            "ppid": "0b" * 16,
            "attestation_quote": base64.b64encode(b"quote-bytes").decode(),
            "operator": {
                "pubkey": "01" * 32,
                "instance_signature": "02" * 64,
                "identity_signature": "03" * 64,
            },
            "owner": None,
            "challenge": "0c" * 32,
            "instance_signature": "0d" * 64,
        }
    ]


async def test_registry_client_fetches_a_challenge() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"nonce": "aB" * 32, "expires_at": "2026-12-02T04:00:00Z"})

    client = HttpRegistryClient("http://reg:3000/", transport=httpx.MockTransport(handler))
    assert await client.challenge() == b"\xab" * 32
    assert seen == ["GET /challenge"]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json=["nonce"]),
        httpx.Response(200, json={"expires_at": "2026-12-02T04:00:00Z"}),
        httpx.Response(200, json={"nonce": 7}),
        httpx.Response(200, json={"nonce": "ab" * 31}),
        httpx.Response(200, json={"nonce": "ab" * 33}),
        httpx.Response(200, json={"nonce": "zz" * 32}),
        httpx.Response(200, json={"nonce": " " + "ab" * 31 + "a"}),
        httpx.Response(200, content=b'{"nonce": "' + b"a" * 70_000 + b'"}'),
        httpx.Response(200, content=b"[" * 60_000 + b"]" * 60_000),
        httpx.Response(200, content=b"[" * 30_000 + b"]" * 30_000),
        httpx.Response(200, content=b'{"nonce": "\xff\xfe"}'),
        httpx.Response(404, json={"error": "no such route"}),
        httpx.Response(429, text="slow down"),
        httpx.Response(503, text="down"),
    ],
)
async def test_no_usable_challenge_is_an_unavailable_registry(response: httpx.Response) -> None:
    client = HttpRegistryClient("http://reg", transport=httpx.MockTransport(lambda _: response))
    with pytest.raises(RegistryUnavailable, match="challenge"):
        await client.challenge()


async def test_an_unreachable_challenge_is_an_unavailable_registry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = HttpRegistryClient("http://reg", transport=httpx.MockTransport(refuse))
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        await client.challenge()


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_registry_4xx_is_a_refusal_with_its_reason(status: int) -> None:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(status, json={"error": "quote\x00 not trusted"})
    )
    client = HttpRegistryClient("http://reg", transport=transport)
    with pytest.raises(RegistryRejected) as refusal:
        await client.register(REQUEST)
    assert refusal.value.status == status
    assert refusal.value.reason == "quote? not trusted"


async def test_a_deeply_nested_refusal_is_still_a_refusal() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(400, content=b"[" * 30_000))
    client = HttpRegistryClient("http://reg", transport=transport)
    with pytest.raises(RegistryRejected) as refusal:
        await client.register(REQUEST)
    assert refusal.value.reason.startswith("[[[")


@pytest.mark.parametrize("status", [500, 502, 503, 429, 302, 201])
async def test_registry_failure_statuses_are_unavailable(status: int) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status, text="oops"))
    client = HttpRegistryClient("http://reg", transport=transport)
    with pytest.raises(RegistryUnavailable):
        await client.register(REQUEST)


async def test_registry_timeout_is_unavailable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = HttpRegistryClient("http://reg", transport=httpx.MockTransport(slow))
    with pytest.raises(RegistryUnavailable, match="ReadTimeout"):
        await client.register(REQUEST)


LOOKED_UP = bytes(range(32))
IDENTITY = IdentityInfo(
    pubkey=bytes(32), instance_signature=bytes(64), identity_signature=bytes(64)
)


def _lookup_client(response: httpx.Response, seen: list[str]) -> HttpRegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return response

    return HttpRegistryClient("http://reg/", transport=httpx.MockTransport(handler))


async def test_registry_lookup_parses_the_records_identities() -> None:
    seen: list[str] = []
    body = {"ppid": "00", "attestation_quote": "", "operator": IDENTITY.to_object(), "owner": None}
    client = _lookup_client(httpx.Response(200, json=body), seen)
    assert await client.lookup(LOOKED_UP) == RegistryRecord(operator=IDENTITY, owner=None)
    assert seen == [f"GET /instance/{LOOKED_UP.hex()}"]


def _workload_log(*transitions: Transition) -> str:
    log = EventLog(BootEvent.fresh(0))
    for transition in transitions:
        log.append(WorkloadEvent(transition, "localhost/site:1", "ab" * 32, (), 8080))
    return log.to_json()


@pytest.mark.parametrize(
    ("workload", "event_log", "shown"),
    [
        (None, None, None),
        ({"transition": "configure"}, None, "configure"),
        ({"transition": "expose"}, None, "expose"),
        (None, _workload_log("configure", "expose"), "expose"),
        ({"transition": "configure"}, _workload_log("configure", "expose"), "expose"),
        ({"transition": "expose"}, _workload_log(), "expose"),
        (None, _workload_log("configure"), "configure"),
    ],
)
async def test_registry_lookup_parses_the_latest_workload_transition_expose_winning(
    workload: object, event_log: str | None, shown: Transition | None
) -> None:
    body = {"operator": None, "owner": None, "workload": workload, "event_log": event_log}
    client = _lookup_client(httpx.Response(200, json=body), [])
    record = await client.lookup(LOOKED_UP)
    assert record is not None and (record.operator, record.owner) == (None, None)
    assert record.workload == shown


@pytest.mark.parametrize(
    ("workload", "event_log", "image_id"),
    [
        (None, None, None),
        ({"transition": "configure", "image_id": "cd" * 32}, None, "cd" * 32),
        ({"transition": "configure"}, None, None),
        # The verified log wins over the record's summary of it.
        ({"transition": "configure", "image_id": "cd" * 32}, _workload_log("configure"), "ab" * 32),
        (None, _workload_log(), None),
    ],
)
async def test_registry_lookup_names_the_image_id_the_registry_accepted(
    workload: object, event_log: str | None, image_id: str | None
) -> None:
    body = {"operator": None, "owner": None, "workload": workload, "event_log": event_log}
    record = await _lookup_client(httpx.Response(200, json=body), []).lookup(LOOKED_UP)
    assert record is not None and record.workload_image_id == image_id


async def test_registry_lookup_of_an_unknown_instance_is_none() -> None:
    assert (
        await _lookup_client(httpx.Response(404, json={"error": "x"}), []).lookup(LOOKED_UP) is None
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"operator": null}',
        json.dumps({"operator": {"pubkey": "00"}, "owner": None}).encode(),
        json.dumps({"operator": IDENTITY.to_object() | {"extra": "00"}, "owner": None}).encode(),
        json.dumps({"operator": None, "owner": None, "workload": "expose"}).encode(),
        json.dumps({"operator": None, "owner": None, "workload": {"transition": "x"}}).encode(),
        json.dumps({"operator": None, "owner": None, "event_log": {"events": []}}).encode(),
        json.dumps({"operator": None, "owner": None, "event_log": "not a log"}).encode(),
    ],
)
async def test_a_malformed_registry_record_is_named(body: bytes) -> None:
    client = _lookup_client(httpx.Response(200, content=body), [])
    with pytest.raises(RegistryRecordMalformed):
        await client.lookup(LOOKED_UP)


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_a_failed_registry_lookup_is_unavailable(status: int) -> None:
    client = _lookup_client(httpx.Response(status, json={"error": "nope"}), [])
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}"):
        await client.lookup(LOOKED_UP)


async def test_an_unreachable_registry_lookup_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = HttpRegistryClient("http://reg", transport=httpx.MockTransport(refuse))
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        await client.lookup(LOOKED_UP)
