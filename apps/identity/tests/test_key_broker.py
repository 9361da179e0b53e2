"""The store key from the owner's key broker: `KbsKeyProvider` and `MeasuredEvidence` against an
in-process fake KBS that checks the binding, the proof of possession and the event log replay;
the locked workload, its back-off and its recovery by itself; the measured broker URL; the
warning without a broker. No real sleeps: back-off delays are a few milliseconds."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, instance_pubkey, pub, register_operator, register_owner, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr, FakeWorkload
from kbs_fake import FakeKbs, MitmKbs

from tdx_identity import Settings
from tdx_identity.core.evidence import MeasuredEvidence
from tdx_identity.core.measurement import MeasurementLog
from tdx_identity.core.ports import CommittedWorkload, KeyProvider, WorkloadConfig
from tdx_identity.core.service import IdentityService
from tdx_identity.exceptions import QuoteSourceError, StoreKeyUnavailable, WorkloadLocked
from tdx_identity.settings import measured_settings, parse_settings
from tdx_identity.workload.helpers import installed_helpers
from tdx_identity.workload.key_broker import FETCH_OUTCOMES, KbsKeyProvider, KeyBrokerSettings
from tdx_identity.workload.manager import WorkloadSettings, store_key_provider
from tdx_identity.workload.ssh import HostKey
from tdx_identity.workload.store_key import LocalFileKeyProvider
from tdx_kbs_protocol import (
    EvidenceProvider,
    TeeKeyPair,
    open_store_key,
    seal_store_key,
    store_key_path,
)
from tdx_measure import EventLog, IdentityEvent

KBS_URL = "http://kbs.test:3020"
IMAGE = "localhost/busybox-site:1"


def key_forms(key: bytes) -> list[bytes]:
    """The key as raw bytes, hex (both cases) and base64 (std and url-safe)."""
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key).rstrip(b"="),
        base64.urlsafe_b64encode(key).rstrip(b"="),
    ]


def files_holding(root: Path, key: bytes) -> list[Path]:
    forms = key_forms(key)
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(form in data for form in forms):
                found.append(path)
    return found


# ---- the provider and the evidence, against the fake broker ------------------------------


@dataclass
class Td:
    """An instance key, a started RTMR3 log naming an owner, and a quote source over it."""

    key: Ed25519PrivateKey
    rtmr: FakeRtmr
    quotes: FakeQuoteSource
    log: MeasurementLog
    owner: Ed25519PrivateKey

    @property
    def pubkey(self) -> bytes:
        return pub(self.key)

    def evidence(self) -> MeasuredEvidence:
        return MeasuredEvidence(self.key, self.quotes, self.log)

    def provider(self, kbs: FakeKbs | MitmKbs) -> KbsKeyProvider:
        return KbsKeyProvider(
            KeyBrokerSettings(KBS_URL, timeout=5.0),
            self.pubkey,
            self.evidence,
            lambda: pub(self.owner),
            transport=kbs.transport(),
        )


@pytest.fixture
async def td(tmp_path: Path) -> Td:
    rtmr = FakeRtmr()
    log = MeasurementLog(tmp_path / "storage", rtmr, helpers=installed_helpers)
    await log.start(1_800_000_000)
    owner = Ed25519PrivateKey.generate()
    await log.record(IdentityEvent(role="owner", pubkey=pub(owner)))
    return Td(Ed25519PrivateKey.generate(), rtmr, FakeQuoteSource(rtmr=rtmr), log, owner)


@pytest.fixture
def kbs(td: Td) -> FakeKbs:
    fake = FakeKbs(owner=pub(td.owner))
    fake.put_store_key(td.pubkey, secrets.token_bytes(32), td.owner)
    return fake


def stored_key(kbs: FakeKbs, td: Td) -> bytes:
    """The key in the owner's envelope the fake broker holds."""
    return open_store_key(
        kbs.resources[str(store_key_path(td.pubkey))],
        owner_pubkey=pub(td.owner),
        instance_pubkey=td.pubkey,
    )


async def test_the_provider_fetches_the_key_the_broker_releases_to_its_checked_evidence(
    td: Td, kbs: FakeKbs
) -> None:
    provider = td.provider(kbs)
    assert provider.resource == f"tdx-identity/store-key/{td.pubkey.hex()}"
    assert await provider.get_key() == stored_key(kbs, td)
    assert kbs.released == [provider.resource]
    assert kbs.refusals == []
    assert len(td.quotes.requests) == 1, "one quote over the KBS binding"
    # Kept in memory once released: no second round trip, create_key makes no key of its own.
    assert await provider.get_key() == await provider.create_key() == stored_key(kbs, td)
    assert len(kbs.released) == 1
    assert provider.fetch_outcomes() == {**dict.fromkeys(FETCH_OUTCOMES, 0), "released": 1}


async def test_a_policy_refusal_is_store_key_unavailable_naming_it_and_keeps_nothing(
    td: Td, kbs: FakeKbs
) -> None:
    provider = td.provider(kbs)
    kbs.refuse = True
    with pytest.raises(StoreKeyUnavailable, match=r"refused .* \(401 PolicyDeny\): the policy"):
        await provider.get_key()
    assert kbs.released == []
    kbs.refuse = False
    assert await provider.get_key() == stored_key(kbs, td), "a refusal is not remembered"
    assert provider.fetch_outcomes() == {
        **dict.fromkeys(FETCH_OUTCOMES, 0),
        "refused": 1,
        "released": 1,
    }


async def test_an_event_log_naming_another_owner_gets_no_key(td: Td, kbs: FakeKbs) -> None:
    kbs.owner = pub(Ed25519PrivateKey.generate())
    with pytest.raises(StoreKeyUnavailable, match="names another owner"):
        await td.provider(kbs).get_key()
    assert kbs.released == []


async def test_a_quote_for_other_report_data_is_never_sent(td: Td, kbs: FakeKbs) -> None:
    td.quotes.wrong_report_data = True
    provider = td.provider(kbs)
    with pytest.raises(StoreKeyUnavailable, match="quote for other report_data"):
        await provider.get_key()
    assert kbs.released == []
    assert provider.fetch_outcomes()["no_evidence"] == 1


async def test_a_broker_that_is_down_is_store_key_unavailable(td: Td, kbs: FakeKbs) -> None:
    kbs.down = True
    provider = td.provider(kbs)
    with pytest.raises(StoreKeyUnavailable, match="key broker is unavailable"):
        await provider.get_key()
    assert provider.fetch_outcomes() == {**dict.fromkeys(FETCH_OUTCOMES, 0), "unavailable": 1}


async def test_an_unknown_resource_and_a_bare_key_without_the_owners_envelope_are_refused(
    td: Td, kbs: FakeKbs
) -> None:
    kbs.resources.clear()
    with pytest.raises(StoreKeyUnavailable, match="404 ResourceNotFound"):
        await td.provider(kbs).get_key()
    kbs.put_resource(td.pubkey, secrets.token_bytes(32))
    with pytest.raises(StoreKeyUnavailable, match="envelope is 154 bytes, not 32"):
        await td.provider(kbs).get_key()


def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda td, key: key, "envelope is 154 bytes, not 32"),
        (lambda td, key: seal_store_key(other_key(), td.pubkey, key), "not signed by the owner"),
        (lambda td, key: seal_store_key(td.owner, pub(other_key()), key), "another instance"),
    ],
    ids=["raw-key", "another-signer", "another-instance"],
)
async def test_a_host_in_the_middle_cannot_hand_the_td_a_key(
    td: Td,
    payload: Callable[[Td, bytes], bytes],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A validly encrypted JWE (to the TD's own TEE key) of a key the host chose is refused."""
    key = secrets.token_bytes(32)
    mitm = MitmKbs(payload(td, key))
    provider = td.provider(mitm)
    with (
        caplog.at_level(logging.ERROR, logger="tdx_identity.workload"),
        pytest.raises(StoreKeyUnavailable, match=reason) as refused,
    ):
        await provider.get_key()
    assert mitm.released == 1, "the JWE was delivered and decrypted"
    assert "is not the owner's store key for this instance" in str(refused.value)
    [record] = [r for r in caplog.records if "refused the store key" in r.getMessage()]
    assert reason in record.reason  # type: ignore[attr-defined]
    assert record.owner_pubkey == pub(td.owner).hex()  # type: ignore[attr-defined]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert not any(form.decode("latin-1") in logged for form in key_forms(key))
    with pytest.raises(StoreKeyUnavailable):
        await provider.get_key()
    assert mitm.released == 2, "nothing of a refused answer is kept: it asks again"
    assert provider.fetch_outcomes()["envelope_refused"] == 2


async def test_without_a_confirmed_owner_the_broker_is_not_asked(td: Td, kbs: FakeKbs) -> None:
    provider = KbsKeyProvider(
        KeyBrokerSettings(KBS_URL), td.pubkey, td.evidence, lambda: None, transport=kbs.transport()
    )
    with pytest.raises(StoreKeyUnavailable, match="no owner confirmed by the registry"):
        await provider.get_key()
    assert kbs.requests == 0
    assert provider.fetch_outcomes()["no_owner"] == 1


async def test_the_evidence_refuses_a_quote_once_the_log_changed(td: Td, kbs: FakeKbs) -> None:
    evidence = td.evidence()
    with pytest.raises(QuoteSourceError, match="before its evidence"):
        await evidence.quote(bytes(64))
    tee = TeeKeyPair.generate().public
    await evidence.additional_evidence("bm9uY2U=", tee)
    await td.log.record(IdentityEvent(role="operator", pubkey=pub(Ed25519PrivateKey.generate())))
    with pytest.raises(QuoteSourceError, match="event log changed"):
        await evidence.quote(bytes(64))
    assert td.quotes.requests == []


def temp_entries() -> set[Path]:
    return set(Path(tempfile.gettempdir()).iterdir())


def new_temp_files_holding(before: set[Path], key: bytes) -> list[Path]:
    forms = key_forms(key)
    return [
        path
        for path in temp_entries() - before
        if path.is_file() and any(form in path.read_bytes() for form in forms)
    ]


async def test_the_released_key_is_never_written_to_any_file(
    td: Td, kbs: FakeKbs, tmp_path: Path
) -> None:
    before = temp_entries()
    key = await td.provider(kbs).get_key()
    assert key == stored_key(kbs, td)
    assert files_holding(tmp_path, key) == []
    assert new_temp_files_holding(before, key) == []


# ---- the key source the settings choose -----------------------------------------------------


def _workload_settings(tmp_path: Path, broker: KeyBrokerSettings | None) -> WorkloadSettings:
    from tdx_identity.app import workload_settings

    base = workload_settings(Settings(storage_path=tmp_path / "s"))
    return replace(base, store_key_path=tmp_path / "keys" / "store.key", key_broker=broker)


def no_evidence() -> EvidenceProvider:
    pytest.fail("no evidence is asked for when the key source is chosen")


def test_without_a_broker_the_local_key_file_is_announced_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _workload_settings(tmp_path, None)
    with caplog.at_level(logging.WARNING, logger="tdx_identity.workload"):
        keys = store_key_provider(settings, bytes(32), no_evidence, lambda: None)
    assert isinstance(keys, LocalFileKeyProvider)
    [record] = [r for r in caplog.records if "UNPROTECTED STORE KEY" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"the host can read {settings.store_key_path} and decrypt the store" in (
        record.getMessage()
    )


def test_with_a_broker_the_key_comes_from_it_without_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _workload_settings(tmp_path, KeyBrokerSettings(KBS_URL))
    with caplog.at_level(logging.INFO, logger="tdx_identity.workload"):
        keys = store_key_provider(settings, bytes(32), no_evidence, lambda: None)
    assert isinstance(keys, KbsKeyProvider)
    assert keys.url == KBS_URL
    assert not any("UNPROTECTED" in r.getMessage() for r in caplog.records)
    [plain] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "reached over plain http" in plain.getMessage()
    caplog.clear()
    https = _workload_settings(tmp_path, KeyBrokerSettings("https://kbs.example:3020"))
    with caplog.at_level(logging.WARNING, logger="tdx_identity.workload"):
        store_key_provider(https, bytes(32), no_evidence, lambda: None)
    assert caplog.records == []


def test_with_a_broker_a_leftover_local_key_file_is_warned_about_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = KeyBrokerSettings("https://owner:s3cret@kbs.example")
    settings = _workload_settings(tmp_path, broker)
    settings.store_key_path.parent.mkdir()
    settings.store_key_path.write_bytes(bytes(32))
    with caplog.at_level(logging.INFO, logger="tdx_identity.workload"):
        store_key_provider(settings, bytes(32), no_evidence, lambda: None)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"a local store key file remains at {settings.store_key_path}" in record.getMessage()
    assert settings.store_key_path.read_bytes() == bytes(32)
    [info] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert info.key_broker_url == "https://kbs.example"  # type: ignore[attr-defined]
    assert "s3cret" not in caplog.text + str([r.__dict__ for r in caplog.records])


def test_the_key_broker_settings_and_what_the_config_event_measures() -> None:
    local = parse_settings([], {})
    assert local.key_broker_url is None
    assert measured_settings(local)["key_broker_url"] == ""
    assert measured_settings(local)["store_key_source"] == "local file"
    settings = parse_settings(
        ["--key-broker-retry-initial", "0.5"],
        {"KEY_BROKER_URL": "https://owner:s3cret@kbs.example:3020/"},
    )
    assert settings.key_broker_url == "https://owner:s3cret@kbs.example:3020"
    assert settings.key_broker_retry_initial == 0.5
    assert settings.key_broker_retry_max == 30.0
    measured = measured_settings(settings)
    assert measured["key_broker_url"] == "https://kbs.example:3020"
    assert measured["store_key_source"] == "key broker"
    assert "s3cret" not in "".join(measured.values())
    flag = parse_settings(["--key-broker-url", KBS_URL], {"KEY_BROKER_URL": "http://other"})
    assert flag.key_broker_url == KBS_URL


def test_a_key_broker_url_that_is_not_http_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--key-broker-url", "file:///etc/key"], {})
    assert exit_info.value.code == 2
    assert "not an http(s) URL" in capsys.readouterr().err


# ---- the service: configure, restart, locked, recovered by itself ---------------------------


@dataclass
class KeyedWorkload(FakeWorkload):
    """A fake runtime that, like the podman manager, needs the store key to configure and to
    recover a committed workload (raising WorkloadLocked when it is not released)."""

    keys: KeyProvider | None = None
    key_seen: list[bytes] = field(default_factory=list)

    async def _key(self) -> None:
        assert self.keys is not None
        try:
            self.key_seen.append(await self.keys.get_key())
        except StoreKeyUnavailable as exc:
            raise WorkloadLocked(str(exc)) from None

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        self.owners.append(owner_pubkey)

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        await self._key()
        await super().configure(config, owner_pubkey)

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        if committed is not None:
            await self._key()
        return await super().recover(committed)


@dataclass
class Broker:
    kbs: FakeKbs
    workloads: list[KeyedWorkload] = field(default_factory=list)
    mitm: MitmKbs | None = None
    """When set, a host in the middle answers at the broker URL instead of `kbs`."""

    def transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            if self.mitm is not None:
                return await self.mitm.handle(request)
            return await self.kbs.handle(request)

        return httpx.MockTransport(handle)

    def factory(
        self,
        settings: WorkloadSettings,
        section: Any,
        host_key: HostKey,
        keys: KeyProvider,
        front: Any,
    ) -> KeyedWorkload:
        assert isinstance(keys, KbsKeyProvider), "the settings' broker is used"
        workload = KeyedWorkload(keys=keys)
        self.workloads.append(workload)
        return workload


@pytest.fixture
def broker_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        key_broker_url=KBS_URL,
        key_broker_retry_initial=0.01,
        key_broker_retry_max=0.04,
    )


@pytest.fixture
def broker() -> Broker:
    return Broker(FakeKbs())


@pytest.fixture
def with_broker(running: Running, broker_settings: Settings, broker: Broker) -> Running:
    def run(**overrides: Any) -> Any:
        return running(
            settings=broker_settings,
            workload=None,
            workload_factory=broker.factory,
            key_broker_transport=broker.transport(),
            **overrides,
        )

    return run


async def configure(
    client: httpx.AsyncClient, owner: Ed25519PrivateKey, seq: int
) -> httpx.Response:
    body = {
        "action": "configure",
        "seq": seq,
        "instance_pubkey": (await instance_pubkey(client)).hex(),
        "image": IMAGE,
        "persist_dirs": ["/data"],
        "port": 8000,
    }
    raw = json.dumps(body).encode()
    return await client.post(
        "/workload/configure", content=raw, headers={"x-signature": sign(owner, raw)}
    )


async def registered(client: httpx.AsyncClient, broker: Broker) -> Ed25519PrivateKey:
    owner = Ed25519PrivateKey.generate()
    token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
    assert (await register_owner(client, owner, token["owner_token"])).status_code == 200
    broker.kbs.owner = pub(owner)
    return owner


async def workload_state(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/instance/state")).json()
    return body


async def wait_for(client: httpx.AsyncClient, status: str) -> dict[str, Any]:
    """The state once its workload status is `status` (within 3 s)."""
    async with asyncio.timeout(3.0):
        while True:
            state = await workload_state(client)
            if state["workload"] == status:
                return state
            await asyncio.sleep(0.01)


async def test_configure_fetches_the_key_and_a_restart_fetches_it_again(
    with_broker: Running, broker: Broker
) -> None:
    async with with_broker() as client:
        owner = await registered(client, broker)
        assert broker.kbs.requests == 0, "owner registration needs no key from the broker"
        key = secrets.token_bytes(32)
        broker.kbs.put_store_key(await instance_pubkey(client), key, owner)
        assert (await configure(client, owner, 1)).status_code == 200
        assert broker.workloads[-1].key_seen == [key]
        events = EventLog.from_json((await client.get("/instance/eventlog")).text)
        assert events.config is not None
        assert events.config.get("key_broker_url") == KBS_URL
        assert events.config.get("store_key_source") == "key broker"
    async with with_broker() as client:
        assert (await workload_state(client))["workload"] == "running"
        assert broker.workloads[-1].key_seen == [key]
        assert len(broker.kbs.released) == 2


async def test_a_refusal_at_configure_fails_the_step_with_503_and_commits_nothing(
    with_broker: Running, broker: Broker
) -> None:
    async with with_broker() as client:
        owner = await registered(client, broker)
        broker.kbs.put_store_key(await instance_pubkey(client), secrets.token_bytes(32), owner)
        broker.kbs.refuse = True
        before = await workload_state(client)
        response = await configure(client, owner, 1)
        assert response.status_code == 503
        assert "PolicyDeny" in response.json()["error"]
        after = await workload_state(client)
        assert after == before
        assert after["state"] == "owner_registered" and after["last_seq"] == 0
        assert broker.workloads[-1].configured == []
        broker.kbs.refuse = False
        assert (await configure(client, owner, 1)).status_code == 200


async def test_a_broker_down_at_restart_locks_the_workload_until_it_is_back(
    with_broker: Running,
    broker: Broker,
    registry: FakeRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = secrets.token_bytes(32)
    async with with_broker() as client:
        owner = await registered(client, broker)
        broker.kbs.put_store_key(await instance_pubkey(client), key, owner)
        assert (await configure(client, owner, 1)).status_code == 200
    broker.kbs.down = True
    registrations = len(registry.accepted)
    async with with_broker() as client:
        assert (await workload_state(client))["workload"] == "locked"
    assert len(registry.accepted) == registrations, "no re-registration while locked"
    with caplog.at_level(logging.INFO):
        async with with_broker() as client:
            state = await workload_state(client)
            assert state["workload"] == "locked"
            assert "the key broker is unavailable" in state["workload_reason"]
            assert state["registry_comparison"]["status"] == "agreed"
            workload = broker.workloads[-1]
            assert workload.started is None, "nothing runs while locked"
            refused = await configure(client, owner, 2)
            assert refused.status_code == 503
            assert "workload locked" in refused.json()["error"]
            retries = broker.kbs.requests
            await asyncio.sleep(0.1)
            assert broker.kbs.requests > retries, "the service keeps asking"
            broker.kbs.down = False
            state = await wait_for(client, "running")
            assert state["workload_reason"] is None
            assert state["registry_comparison"]["status"] == "agreed"
            assert len(registry.accepted) == registrations + 1, "re-registered once recovered"
            latest = EventLog.from_json(registry.accepted[-1].event_log or "")
            assert latest.workload is not None and latest.workload.transition == "configure"
            assert workload.key_seen == [key]
            assert workload.recovered[-1] is not None
            assert (await configure(client, owner, 2)).status_code == 200
    failures = [r for r in caplog.records if "still not released" in r.getMessage()]
    assert failures and all(r.levelno == logging.WARNING for r in failures)
    assert all("key broker is unavailable" in r.reason for r in failures)  # type: ignore[attr-defined]
    assert any("released the store key" in r.getMessage() for r in caplog.records)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert not any(form.decode("latin-1") in logged for form in key_forms(key))


async def test_shutdown_cancels_the_retry_of_a_locked_workload(
    with_broker: Running, broker: Broker
) -> None:
    async with with_broker() as client:
        owner = await registered(client, broker)
        broker.kbs.put_store_key(await instance_pubkey(client), secrets.token_bytes(32), owner)
        assert (await configure(client, owner, 1)).status_code == 200
    broker.kbs.refuse = True
    async with with_broker() as client:
        assert (await workload_state(client))["workload"] == "locked"
        service = client.app.ctx.service  # type: ignore[attr-defined]
        task = service._unlocking
        assert task is not None and not task.done()
    assert task.cancelled()
    asked = broker.kbs.requests
    await asyncio.sleep(0.08)
    assert broker.kbs.requests == asked, "nothing asks the broker after shutdown"


async def test_a_recovered_workload_that_cannot_be_measured_stays_locked_until_it_is(
    with_broker: Running, broker: Broker
) -> None:
    async with with_broker() as client:
        owner = await registered(client, broker)
        broker.kbs.put_store_key(await instance_pubkey(client), secrets.token_bytes(32), owner)
        assert (await configure(client, owner, 1)).status_code == 200
    broker.kbs.down = True
    rebooted = FakeRtmr()  # after a reboot RTMR3 is zero: the new log must name the workload
    quotes = FakeQuoteSource(rtmr=rebooted)
    async with with_broker(rtmr_device=rebooted, quote_source=quotes) as client:
        assert (await workload_state(client))["workload"] == "locked"
        rebooted.fail = True
        broker.kbs.down = False
        async with asyncio.timeout(3.0):
            while True:
                reason = (await workload_state(client))["workload_reason"] or ""
                if "could not be measured" in reason:
                    break
                await asyncio.sleep(0.01)
        assert (await workload_state(client))["workload"] == "locked"
        assert (await configure(client, owner, 2)).status_code == 503
        rebooted.fail = False
        await wait_for(client, "running")
        events = EventLog.from_json((await client.get("/instance/eventlog")).text)
        assert events.workload is not None and events.workload.transition == "configure"
        assert (await configure(client, owner, 2)).status_code == 200


def mitm_payloads(instance: bytes, key: bytes) -> list[bytes]:
    """What a host in the middle could hand the TD: a bare key of its choosing, or that key in
    an envelope for this instance signed by a key of its own."""
    return [key, seal_store_key(Ed25519PrivateKey.generate(), instance, key)]


async def test_a_host_in_the_middle_at_the_first_configure_is_refused_and_nothing_is_made(
    with_broker: Running, broker: Broker, registry: FakeRegistry
) -> None:
    async with with_broker() as client:
        owner = await registered(client, broker)
        instance = await instance_pubkey(client)
        broker.kbs.put_store_key(instance, secrets.token_bytes(32), owner)
        before = await workload_state(client)
        registrations = len(registry.accepted)
        for payload in mitm_payloads(instance, secrets.token_bytes(32)):
            broker.mitm = MitmKbs(payload)
            response = await configure(client, owner, 1)
            assert response.status_code == 503
            error = response.json()["error"]
            assert "workload locked" in error
            assert "is not the owner's store key for this instance" in error
            assert broker.mitm.released == 1
            assert await workload_state(client) == before
            assert broker.workloads[-1].configured == []
            assert broker.workloads[-1].key_seen == []
        assert len(registry.accepted) == registrations, "nothing measured or registered"
        broker.mitm = None
        assert (await configure(client, owner, 1)).status_code == 200


async def test_a_host_in_the_middle_at_restart_keeps_the_workload_locked(
    with_broker: Running, broker: Broker
) -> None:
    key = secrets.token_bytes(32)
    async with with_broker() as client:
        owner = await registered(client, broker)
        instance = await instance_pubkey(client)
        broker.kbs.put_store_key(instance, key, owner)
        assert (await configure(client, owner, 1)).status_code == 200
    for payload in mitm_payloads(instance, secrets.token_bytes(32)):
        broker.mitm = MitmKbs(payload)
        async with with_broker() as client:
            state = await workload_state(client)
            assert state["state"] == "configured"
            assert state["workload"] == "locked"
            assert "is not the owner's store key" in state["workload_reason"]
            workload = broker.workloads[-1]
            assert workload.started is None and workload.key_seen == [], "nothing runs"
            assert (await configure(client, owner, 2)).status_code == 503
            asked = broker.mitm.released
            await asyncio.sleep(0.08)
            assert broker.mitm.released > asked, "still asking, still refusing"
            assert (await workload_state(client))["workload"] == "locked"
    broker.mitm = None
    async with with_broker() as client:
        await wait_for(client, "running")
        assert broker.workloads[-1].key_seen == [key]


async def wait_for_comparison(client: httpx.AsyncClient, status: str) -> dict[str, Any]:
    """The state once the registry comparison's status is `status` (within 5 s)."""
    async with asyncio.timeout(5.0):
        while True:
            state = await workload_state(client)
            if state["registry_comparison"]["status"] == status:
                return state
            await asyncio.sleep(0.01)


def confirmed_owner(client: httpx.AsyncClient) -> bytes | None:
    service: IdentityService = client.app.ctx.service  # type: ignore[attr-defined]
    return service.confirmed_owner


async def test_the_owner_the_envelope_is_checked_against_is_the_one_the_registry_confirmed(
    with_broker: Running, broker: Broker, registry: FakeRegistry
) -> None:
    async with with_broker() as client:
        assert confirmed_owner(client) is None, "no owner registered yet"
        owner = await registered(client, broker)
        assert confirmed_owner(client) == pub(owner), "the owner the registry accepted"
    registry.lookup_unavailable = True
    async with with_broker() as client:
        state = await workload_state(client)
        assert state["registry_comparison"]["status"] == "pending"
        assert confirmed_owner(client) is None, "the state's owner counts once compared"
        registry.lookup_unavailable = False
        await wait_for_comparison(client, "agreed")
        assert confirmed_owner(client) == pub(owner)
