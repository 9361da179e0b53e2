"""The attested SSH host key, the identities in RTMR3, and the start-up comparison of the state's
identities with the registry's record: nothing of the lifecycle is served, and the workload is
not recovered, until the two agree."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, instance_pubkey, pub, register_operator, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr, FakeWorkload
from test_measured_runtime import Parties, sent_log, workload_events

from tdx_identity import Settings
from tdx_identity.core.comparison import Backoff, disagreement
from tdx_identity.core.instance_key import load_or_create_instance_key
from tdx_identity.core.lifecycle import Lifecycle
from tdx_identity.core.measurement import EVENTLOG_FILE
from tdx_identity.core.ports import CommittedWorkload, RegistryRecord, WorkloadConfig
from tdx_identity.core.state import STATE_FILE_NAME, PersistedState
from tdx_measure import EventLog, IdentityEvent, SshHostKeyEvent, WorkloadEvent
from tdx_report_data import IdentityInfo, sign_identity, sign_identity_v2, sign_instance_v2


async def served_log(client: httpx.AsyncClient) -> EventLog:
    return EventLog.from_json((await client.get("/instance/eventlog")).text)


async def comparison(client: httpx.AsyncClient) -> dict[str, Any]:
    value: dict[str, Any] = (await client.get("/instance/state")).json()["registry_comparison"]
    return value


async def wait_for_agreement(client: httpx.AsyncClient) -> None:
    deadline = asyncio.get_running_loop().time() + 10.0
    while (await comparison(client))["status"] != "agreed":
        assert asyncio.get_running_loop().time() < deadline, await comparison(client)
        await asyncio.sleep(0.02)


@dataclass
class WatchingWorkload(FakeWorkload):
    """Notes, each time SSH setup access could open (recover, configure), the SSH host key the
    RTMR3 event log file names at that moment."""

    log_file: Path | None = None
    ssh_key_seen: list[str | None] = field(default_factory=list)

    def _note(self) -> None:
        assert self.log_file is not None
        self.ssh_key_seen.append(EventLog.from_json(self.log_file.read_bytes()).ssh_host_key)

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        self._note()
        await super().configure(config, owner_pubkey)

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        self._note()
        return await super().recover(committed)


async def test_the_ssh_host_key_is_measured_before_ssh_setup_access_can_open(
    running: Running, settings: Settings
) -> None:
    served: list[str] = []
    watching = WatchingWorkload(log_file=settings.storage_path / EVENTLOG_FILE)
    parties = Parties()
    for start in range(2):
        async with running(workload=watching) as client:
            served.append((await client.get("/workload/ssh-host-key")).json()["public_key"])
            if start == 0:
                await parties.register(client)
                assert (await parties.configure(client)).status_code == 200
    # Start 0: recover, then configure; start 1: recover the committed workload.
    assert watching.ssh_key_seen == [served[0], served[0], served[1]]
    assert served[0] != served[1]


async def test_identity_events_precede_the_registration_quotes(
    running: Running, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
    operator_request, owner_request = registry.accepted
    operator_log, owner_log = sent_log(operator_request), sent_log(owner_request)
    assert operator_log.identity("operator") == pub(parties.operator)
    assert operator_log.identity("owner") is None
    assert owner_log.identity("operator") == pub(parties.operator)
    assert owner_log.identity("owner") == pub(parties.owner)


async def test_a_refused_registration_leaves_its_identity_event_and_the_latest_counts(
    running: Running, registry: FakeRegistry
) -> None:
    refused, accepted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        registry.refuse_with = 403
        assert (await register_operator(client, refused)).status_code == 403
        assert (await served_log(client)).identity("operator") == pub(refused)
        assert (await client.get("/instance/state")).json()["state"] == "fresh"
        registry.refuse_with = None
        assert (await register_operator(client, accepted)).status_code == 200
        log = await served_log(client)
    assert log.identity("operator") == pub(accepted)
    assert sent_log(registry.accepted[-1]).identity("operator") == pub(accepted)


async def test_after_a_reboot_the_states_identities_are_measured_again(
    running: Running, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200

    rebooted = FakeRtmr()
    async with running(rtmr_device=rebooted, quote_source=FakeQuoteSource(rtmr=rebooted)) as client:
        log = await served_log(client)
    assert log.identity("operator") == pub(parties.operator)
    assert log.identity("owner") == pub(parties.owner)
    kinds = [type(event) for event in log.events]
    first_workload = kinds.index(WorkloadEvent)
    assert kinds[first_workload - 2 : first_workload] == [IdentityEvent, IdentityEvent]
    assert kinds.index(SshHostKeyEvent) < kinds.index(IdentityEvent)
    restart = sent_log(registry.accepted[-1])
    assert restart == log
    assert len(workload_events(restart)) == 1


async def test_a_fresh_instance_without_a_record_agrees(
    running: Running, registry: FakeRegistry
) -> None:
    async with running() as client:
        assert await comparison(client) == {"status": "agreed", "reason": None}
    assert registry.lookups == 1


def rewrite_owner(settings: Settings) -> Ed25519PrivateKey:
    """As the host can while the service is stopped: a new owner in the state file, with both
    signatures valid (the instance key lies on the same disk). Returns the new owner's key."""
    attacker = Ed25519PrivateKey.generate()
    instance_key = load_or_create_instance_key(settings.storage_path)
    instance = instance_key.public_key().public_bytes_raw()
    forged = sign_identity_v2(
        instance_key, "owner", pub(attacker), sign_instance_v2(attacker, "owner", instance)
    )
    path = settings.storage_path / STATE_FILE_NAME
    state = json.loads(path.read_text())
    state["owner"] = forged.to_object()
    if state["workload_config"] is not None:
        state["workload_config"]["owner_pubkey"] = pub(attacker).hex()
    path.write_text(json.dumps(state))
    return attacker


async def test_a_rewritten_owner_is_refused_with_503_and_the_workload_is_not_recovered(
    running: Running,
    settings: Settings,
    registry: FakeRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
    attacker = rewrite_owner(settings)
    parties.owner = attacker  # the attacker signs its own configure bodies
    workload = FakeWorkload()
    accepted = len(registry.accepted)
    caplog.set_level(logging.INFO, logger="tdx_identity")
    async with running(workload=workload) as client:
        state = (await client.get("/instance/state")).json()
        assert state["state"] == "configured"
        status = state["registry_comparison"]
        assert status["status"] == "disagreed"
        assert "owner" in status["reason"]
        assert pub(attacker).hex()[:16] in status["reason"]
        assert pub(Parties().owner).hex()[:16] not in status["reason"]
        for response in (
            await parties.configure(client),
            await parties.expose(client),
            await register_operator(client, Ed25519PrivateKey.generate()),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == status["reason"]
            assert int(response.headers["retry-after"]) >= 1
        assert (await client.get("/instance/pubkey")).status_code == 200
        log = await served_log(client)
    assert workload.recovered == [] and workload.configured == []
    assert log.identity("owner") != pub(attacker)
    assert len(registry.accepted) == accepted, "no re-registration under the rewritten owner"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "disagree" in r.message]
    assert errors


async def test_the_503_reason_names_both_key_prefixes_of_the_disagreeing_role(
    running: Running, settings: Settings
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
    attacker = rewrite_owner(settings)
    async with running() as client:
        reason = (await comparison(client))["reason"]
    assert reason == (
        "the registry's record disagrees: the owner differs: the state file names "
        f"{pub(attacker).hex()[:16]}..., the registry's record {pub(parties.owner).hex()[:16]}..."
    )


async def test_a_record_whose_identity_does_not_verify_is_a_disagreement(
    running: Running, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
    record = registry.accepted[-1]
    assert record.operator is not None
    bad: IdentityInfo = replace(record.operator, identity_signature=bytes(64))
    registry.record = RegistryRecord(operator=bad, owner=record.owner)
    async with running() as client:
        status = await comparison(client)
    assert status["status"] == "disagreed"
    assert "does not verify against this instance key" in status["reason"]


def test_the_record_identities_must_verify_as_v2_in_their_own_role() -> None:
    """An operator's identity presented as the owner (valid v2 signatures, other role), or a v1
    identity, is a disagreement; v1 agrees only with `accept_v1`, and only when it verifies."""
    instance_key = Ed25519PrivateKey.generate()
    operator_key, owner_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    instance = pub(instance_key)
    signed = sign_instance_v2(operator_key, "operator", instance)
    operator = sign_identity_v2(instance_key, "operator", pub(operator_key), signed)
    signed = sign_instance_v2(owner_key, "owner", instance)
    owner = sign_identity_v2(instance_key, "owner", pub(owner_key), signed)
    v1 = sign_identity(instance_key, pub(operator_key), operator_key.sign(instance))

    def registered(op: IdentityInfo, ow: IdentityInfo) -> PersistedState:
        return PersistedState(
            lifecycle=Lifecycle.OWNER_REGISTERED, ppid=bytes(16), operator=op, owner=ow
        )

    assert (
        disagreement(instance, registered(operator, owner), RegistryRecord(operator, owner)) is None
    )
    swapped = registered(operator, operator)
    reason = disagreement(instance, swapped, RegistryRecord(operator, operator))
    assert reason is not None and "the registry's owner" in reason and "v2 signature" in reason
    old = registered(v1, owner)
    reason = disagreement(instance, old, RegistryRecord(v1, owner))
    assert reason is not None and "the registry's operator" in reason
    assert "does not verify against this instance key" in reason
    assert disagreement(instance, old, RegistryRecord(v1, owner), accept_v1=True) is None
    forged = RegistryRecord(replace(v1, identity_signature=bytes(64)), owner)
    assert disagreement(instance, old, forged, accept_v1=True) is not None


async def test_an_unreachable_registry_holds_owner_steps_then_a_retry_agrees_and_recovers(
    running: Running,
    settings: Settings,
    registry: FakeRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
    accepted, lookups_before = len(registry.accepted), registry.lookups
    registry.lookup_unavailable = True
    workload = FakeWorkload()
    fast = replace(settings, registry_retry_initial=0.05, registry_retry_max=0.1)
    caplog.set_level(logging.INFO, logger="tdx_identity")
    async with running(workload=workload, settings=fast) as client:
        status = await comparison(client)
        assert status["status"] == "pending"
        assert status["reason"].startswith("the registry has not been reached yet: ")
        response = await parties.configure(client)
        assert response.status_code == 503
        assert response.json()["error"] == status["reason"]
        await asyncio.sleep(0.3)
        assert workload.recovered == []
        failed = registry.lookups - lookups_before
        assert failed >= 2, "retried in the background"

        registry.lookup_unavailable = False
        await wait_for_agreement(client)
        assert [c.config for c in workload.recovered if c is not None] == [
            WorkloadConfig(image="localhost/site:1", persist_dirs=("/data", "/srv/www"), port=8000)
        ]
        assert len(registry.accepted) == accepted + 1, "re-registered once agreed"
        assert (await parties.configure(client)).status_code == 200
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "compare" in r.message
    ]
    assert len(warnings) >= failed, "a warning per failed attempt"
    assert any("agree" in r.message and r.levelno == logging.INFO for r in caplog.records)


async def test_recovery_is_told_the_image_id_the_registrys_record_accepted(
    running: Running,
) -> None:
    """The workload section (on the host's disk) names the pinned image; recovery also gets the
    ID the registry accepted, from the record's event log, and refuses a section that differs."""
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        logged = (await served_log(client)).workload
    assert logged is not None
    workload = FakeWorkload()
    async with running(workload=workload) as client:
        await wait_for_agreement(client)
    committed = workload.recovered[-1]
    assert committed is not None and committed.accepted_image_id == logged.image_id


async def test_a_disagreement_put_right_in_the_registry_is_found_by_the_retry(
    running: Running, settings: Settings, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
    good = registry.accepted[-1]
    registry.record = RegistryRecord(operator=good.operator, owner=None)
    fast = replace(settings, registry_retry_initial=0.05, registry_retry_max=0.05)
    async with running(settings=fast) as client:
        assert (await comparison(client))["status"] == "disagreed"
        registry.record = RegistryRecord(operator=good.operator, owner=good.owner)
        await wait_for_agreement(client)


async def test_shutdown_cancels_the_pending_comparison(
    running: Running, settings: Settings, registry: FakeRegistry, workload: FakeWorkload
) -> None:
    registry.lookup_unavailable = True
    slow = replace(settings, registry_retry_initial=30.0, registry_retry_max=60.0)
    async with running(settings=slow) as client:
        assert (await comparison(client))["status"] == "pending"
        response = await client.post(
            "/operator/register",
            json={"pubkey": "00" * 32, "signature": sign(Ed25519PrivateKey.generate(), b"")},
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        instance = await instance_pubkey(client)
    assert len(instance) == 32
    assert workload.shutdowns == 1
    assert registry.lookups == 1


def rewrite_lifecycle(settings: Settings, lifecycle: str) -> None:
    """As the host can while the service is stopped: another lifecycle in the state file."""
    path = settings.storage_path / STATE_FILE_NAME
    state = json.loads(path.read_text())
    state["lifecycle"] = lifecycle
    path.write_text(json.dumps(state))


async def _exposed(running: Running) -> Parties:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        assert (await parties.expose(client)).status_code == 200
    return parties


async def test_a_record_showing_an_expose_keeps_ssh_closed_whatever_the_state_file_says(
    running: Running, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    parties = await _exposed(running)
    rewrite_lifecycle(settings, "configured")
    workload = FakeWorkload()
    with caplog.at_level(logging.ERROR, logger="tdx_identity"):
        async with running(workload=workload) as client:
            status = await comparison(client)
            response = await parties.configure(client)
    assert status == {
        "status": "disagreed",
        "reason": "the registry's record disagrees: the lifecycle differs: the state file says "
        "configured, the registry's record shows a expose workload transition",
    }
    assert response.status_code == 503
    assert workload.ssh_closed_for_good and not workload.ssh_open
    assert workload.recovered == [], "nothing is recovered on a disagreement"
    assert any("lifecycle differs" in str(r.__dict__.get("reason")) for r in caplog.records)


async def test_this_boots_log_showing_an_expose_outweighs_a_rolled_back_record(
    running: Running, settings: Settings, registry: FakeRegistry
) -> None:
    await _exposed(running)
    good = registry.accepted[-1]
    registry.record = RegistryRecord(operator=good.operator, owner=good.owner, workload="configure")
    rewrite_lifecycle(settings, "configured")
    workload = FakeWorkload()
    async with running(workload=workload) as client:
        status = await comparison(client)
    assert status == {
        "status": "disagreed",
        "reason": "the registry's record disagrees: the lifecycle differs: this boot's event "
        "log shows an expose, the state file says configured",
    }
    assert workload.ssh_closed_for_good and not workload.ssh_open
    assert workload.recovered == []


async def test_ssh_closes_for_good_from_local_evidence_while_the_registry_is_unreachable(
    running: Running, registry: FakeRegistry
) -> None:
    await _exposed(running)
    registry.lookup_unavailable = True
    workload = FakeWorkload()
    async with running(workload=workload) as client:
        assert (await comparison(client))["status"] == "pending"
    assert workload.ssh_closed_for_good and not workload.ssh_open
    assert workload.recovered == []


async def test_a_state_ahead_of_the_record_is_a_disagreement(
    running: Running, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
    good = registry.accepted[-1]
    registry.record = RegistryRecord(operator=good.operator, owner=good.owner, workload=None)
    workload = FakeWorkload()
    async with running(workload=workload) as client:
        status = await comparison(client)
    assert status["status"] == "disagreed"
    assert (
        "the state file says configured, the registry's record shows no workload"
        in (status["reason"])
    )
    assert workload.recovered == [] and not workload.ssh_open


def test_backoff_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.after(d) for d in (1.0, 2.0, 4.0, 5.0)] == [2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
