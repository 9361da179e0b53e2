"""The measured runtime wired into the service: every registration carries the RTMR3 event log
that explains its quote, configure and expose extend workload events and re-register, the log is
served, a failed re-registration keeps the local state, and a start re-registers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, instance_pubkey, register_operator, register_owner, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import (
    FAKE_IMAGE_ID,
    FakeQuoteSource,
    FakeRegistry,
    FakeRtmr,
    FakeWorkload,
    MockTdxHandler,
    make_quote,
    serve_mock_tdx,
)

from tdx_identity import Settings
from tdx_identity.core.ports import RegistrationRequest
from tdx_identity.platform import SYSFS_RTMR3_PATH
from tdx_identity.settings import measured_settings, parse_settings
from tdx_identity.workload.helpers import HELPER_ROLES, HelperSpec, installed_helpers
from tdx_measure import (
    BootEvent,
    ConfigEvent,
    EventLog,
    ExecutableEvent,
    IdentityEvent,
    MeasurementPolicy,
    SshHostKeyEvent,
    TlsKeyEvent,
    WorkloadEvent,
    check_log,
    verify_log,
)
from tdx_quote import parse_quote

IMAGE = "localhost/site:1"
DIRS = ["/data", "/srv/www"]
PORT = 8000


def quote_rtmr3(request: RegistrationRequest) -> bytes:
    return parse_quote(request.attestation_quote, allow_zero_padding=True).body.rtmr3


def sent_log(request: RegistrationRequest) -> EventLog:
    """The request's event log, checked to replay to its quote's RTMR3 as the registry does."""
    assert request.event_log is not None
    log = EventLog.from_json(request.event_log)
    verify_log(log, quote_rtmr3(request))
    assert request.to_json()["event_log"] == request.event_log
    return log


def workload_events(log: EventLog) -> list[WorkloadEvent]:
    return [event for event in log.events if isinstance(event, WorkloadEvent)]


def expected_event(transition: str) -> WorkloadEvent:
    return WorkloadEvent(
        transition=transition,  # type: ignore[arg-type]
        image=IMAGE,
        image_id=FAKE_IMAGE_ID,
        persist_dirs=tuple(DIRS),
        port=PORT,
    )


class Parties:
    """The operator and owner of one instance, and the owner's signed workload calls."""

    def __init__(self) -> None:
        self.operator = Ed25519PrivateKey.generate()
        self.owner = Ed25519PrivateKey.generate()
        self.seq = 0

    async def register(self, client: httpx.AsyncClient) -> None:
        token = (await register_operator(client, self.operator)).json()["owner_token"]
        assert (await register_owner(client, self.owner, token)).status_code == 200

    async def signed(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        self.seq += 1
        body = {
            "action": path.rsplit("/", 1)[-1],
            "seq": self.seq,
            "instance_pubkey": (await instance_pubkey(client)).hex(),
            **body,
        }
        raw = json.dumps(body).encode()
        return await client.post(path, content=raw, headers={"x-signature": sign(self.owner, raw)})

    async def configure(self, client: httpx.AsyncClient) -> httpx.Response:
        body = {"image": IMAGE, "persist_dirs": DIRS, "port": PORT}
        response: httpx.Response = await self.signed(client, "/workload/configure", body)
        return response

    async def expose(self, client: httpx.AsyncClient) -> httpx.Response:
        response: httpx.Response = await self.signed(client, "/workload/expose", {"image": IMAGE})
        return response


async def state_of(client: httpx.AsyncClient) -> str:
    value: str = (await client.get("/instance/state")).json()["state"]
    return value


async def test_operator_registration_sends_a_log_that_replays_to_the_quotes_rtmr3(
    running: Running, registry: FakeRegistry, rtmr: FakeRtmr, settings: Settings
) -> None:
    async with running() as client:
        assert registry.accepted == []  # a fresh instance has nothing to re-register
        response = await register_operator(client, Ed25519PrivateKey.generate())
        assert response.status_code == 200
    (request,) = registry.accepted
    log = sent_log(request)
    assert quote_rtmr3(request) == rtmr.value == log.replay()
    assert isinstance(log.events[0], BootEvent)
    roles = [event.role for event in log.events if isinstance(event, ExecutableEvent)]
    assert roles == list(installed_helpers(HELPER_ROLES))
    assert len(rtmr.extended) == len(log)
    helpers_end = 1 + len(roles)
    config, host_key = log.events[helpers_end : helpers_end + 2]
    assert config == ConfigEvent.of(measured_settings(settings)), "right after the helpers"
    assert isinstance(host_key, SshHostKeyEvent), "the SSH host key after the settings"
    assert log.config == config


async def test_owner_registration_sends_the_log_too(
    running: Running, registry: FakeRegistry
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
    operator_request, owner_request = registry.accepted
    assert owner_request.owner is not None
    owner_event = IdentityEvent(role="owner", pubkey=parties.owner.public_key().public_bytes_raw())
    assert sent_log(owner_request).events == (*sent_log(operator_request).events, owner_event)


async def test_configure_and_expose_extend_workload_events_and_re_register(
    running: Running, registry: FakeRegistry, rtmr: FakeRtmr
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        configured = registry.accepted[-1]
        assert len(registry.accepted) == 3
        assert (await parties.expose(client)).status_code == 200
        exposed = registry.accepted[-1]
        assert len(registry.accepted) == 4
    owner_registration = registry.accepted[1]
    for request in (configured, exposed):
        assert (request.operator, request.owner) == (
            owner_registration.operator,
            owner_registration.owner,
        )
        assert request.attestation_quote != owner_registration.attestation_quote
    assert workload_events(sent_log(configured)) == [expected_event("configure")]
    final = sent_log(exposed)
    assert workload_events(final) == [expected_event("configure"), expected_event("expose")]
    assert final.workload == expected_event("expose")
    assert quote_rtmr3(exposed) == rtmr.value
    check_log(verify_log(final, quote_rtmr3(exposed)), MeasurementPolicy())  # registry accepts


async def test_the_event_log_is_served_as_json(running: Running, rtmr: FakeRtmr) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        response = await client.get("/instance/eventlog")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    log = EventLog.from_json(response.text)
    assert log.replay() == rtmr.value
    assert log.to_json() == response.text
    assert log.workload == expected_event("configure")


def ssh_open(workload: FakeWorkload) -> bool:
    """Whether the fake runtime's SSH setup access is open now."""
    return workload.ssh_open


def published(workload: FakeWorkload) -> bool:
    """Whether the fake runtime published the workload's port."""
    return workload.published


async def test_a_configure_the_registry_cannot_record_leaves_ssh_closed_and_the_state_unchanged(
    running: Running, registry: FakeRegistry, workload: FakeWorkload, rtmr: FakeRtmr
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        registry.unavailable = True
        response = await parties.configure(client)
        assert response.status_code == 502
        assert response.json()["error"].startswith("registry unavailable")
        assert await state_of(client) == "owner_registered"
        assert (await client.get("/instance/state")).json()["last_seq"] == 0
        assert len(workload.configured) == 1
        assert workload.abandoned == 1, "the refused configure's container is removed"
        assert workload.started is None
        assert not ssh_open(workload)
        served = EventLog.from_json((await client.get("/instance/eventlog")).text)
        assert served.workload == expected_event("configure"), "an extension stays"
        assert served.replay() == rtmr.value

        registry.unavailable = False
        assert (await parties.configure(client)).status_code == 200
        assert ssh_open(workload)
        assert await state_of(client) == "configured"
        assert (await parties.expose(client)).status_code == 200
    final = sent_log(registry.accepted[-1])
    assert workload_events(final) == [
        expected_event("configure"),
        expected_event("configure"),
        expected_event("expose"),
    ]


async def test_a_refused_expose_keeps_ssh_closed_for_good_and_the_port_unpublished(
    running: Running, registry: FakeRegistry, workload: FakeWorkload
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        assert ssh_open(workload)
        registry.refuse_with = 403
        response = await parties.expose(client)
        assert response.status_code == 403
        assert await state_of(client) == "configured"
        assert workload.ssh_closed_for_good and not ssh_open(workload)
        assert not published(workload)
        again = await parties.configure(client)
        assert again.status_code == 400, "a configure would reopen SSH"
        assert not ssh_open(workload)

        registry.refuse_with = None
        assert (await parties.expose(client)).status_code == 200
        assert published(workload)
        assert await state_of(client) == "exposed"


async def test_an_rtmr_failure_during_configure_is_503_and_commits_nothing(
    running: Running, registry: FakeRegistry, rtmr: FakeRtmr
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        accepted = len(registry.accepted)
        rtmr.fail = True
        response = await parties.configure(client)
        assert response.status_code == 503
        assert "RTMR3" in response.json()["error"]
        assert await state_of(client) == "owner_registered"
        assert len(registry.accepted) == accepted


async def test_a_restart_within_the_boot_re_registers_with_the_same_log(
    running: Running, registry: FakeRegistry, rtmr: FakeRtmr
) -> None:
    async with running() as client:
        await Parties().register(client)
    before = sent_log(registry.accepted[-1])
    async with running():
        pass
    assert len(registry.accepted) == 3
    restart = registry.accepted[-1]
    assert restart.owner is not None
    *continued, new_config, new_key, new_tls = sent_log(restart).events
    assert tuple(continued) == before.events
    assert isinstance(new_config, ConfigEvent), "each start measures its settings"
    assert isinstance(new_key, SshHostKeyEvent), "each start measures its new SSH host key"
    assert isinstance(new_tls, TlsKeyEvent), "each start measures its new TLS key"
    assert quote_rtmr3(restart) == rtmr.value


async def test_after_a_reboot_the_new_log_names_the_recovered_workload_and_is_registered(
    running: Running, registry: FakeRegistry, settings: Settings
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
        assert (await parties.expose(client)).status_code == 200
    old = sent_log(registry.accepted[-1])

    rebooted = FakeRtmr()  # RTMR3 starts at zero again
    workload = FakeWorkload()
    async with running(
        rtmr_device=rebooted, workload=workload, quote_source=FakeQuoteSource(rtmr=rebooted)
    ) as client:
        assert await state_of(client) == "exposed"
        served = EventLog.from_json((await client.get("/instance/eventlog")).text)
    restart = registry.accepted[-1]
    new = sent_log(restart)
    assert new == served
    assert new.boot != old.boot
    assert workload_events(new) == [expected_event("configure"), expected_event("expose")]
    assert quote_rtmr3(restart) == rebooted.value
    check_log(verify_log(new, quote_rtmr3(restart)), MeasurementPolicy())
    previous = list(settings.storage_path.glob("eventlog.previous-*.json"))
    assert [EventLog.from_json(path.read_bytes()) for path in previous] == [old]


async def test_a_restart_does_not_measure_an_unchanged_workload_again(
    running: Running, registry: FakeRegistry, rtmr: FakeRtmr
) -> None:
    parties = Parties()
    async with running() as client:
        await parties.register(client)
        assert (await parties.configure(client)).status_code == 200
    extended = len(rtmr.extended)
    async with running():
        pass
    assert len(rtmr.extended) == extended + 3, "only this start's settings, SSH and TLS keys"
    log = sent_log(registry.accepted[-1])
    assert isinstance(log.events[-3], ConfigEvent)
    assert isinstance(log.events[-2], SshHostKeyEvent)
    assert isinstance(log.events[-1], TlsKeyEvent)
    assert workload_events(log) == [expected_event("configure")]


async def test_a_failed_start_up_re_registration_is_logged_not_fatal(
    running: Running, registry: FakeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async with running() as client:
        await Parties().register(client)
    registry.unavailable = True
    with caplog.at_level(logging.WARNING, logger="tdx_identity"):
        async with running() as client:
            assert await state_of(client) == "owner_registered"
            assert (await client.get("/instance/eventlog")).status_code == 200
    assert any("re-registration at start-up failed" in r.getMessage() for r in caplog.records)


def test_registration_request_sends_event_log_only_when_present() -> None:
    base = RegistrationRequest(
        instance_pubkey=bytes(32),
        ppid=bytes(16),
        attestation_quote=make_quote(bytes(64)),
        operator=None,
        owner=None,
        challenge=bytes(32),
        proof_of_possession=bytes(64),
    )
    assert "event_log" not in base.to_json()
    with_log = RegistrationRequest(**{**base.__dict__, "event_log": '{"events":[]}'})
    assert with_log.to_json()["event_log"] == '{"events":[]}'


def test_installed_helpers_keeps_only_programs_present(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"\x7fELF")
    present.chmod(0o755)
    helpers = {
        "here": HelperSpec(("present",)),
        "gone": HelperSpec(("absent",), (tmp_path / "nowhere",)),
    }
    assert list(installed_helpers(helpers, search_path=str(tmp_path))) == ["here"]


def test_rtmr_sysfs_path_from_flag_or_environment() -> None:
    assert parse_settings([], {}).rtmr_sysfs_path == SYSFS_RTMR3_PATH
    env = {"RTMR_SYSFS_PATH": "/env/rtmr3"}
    assert parse_settings([], env).rtmr_sysfs_path == Path("/env/rtmr3")
    flag = ["--rtmr-sysfs-path", "/flag/rtmr3"]
    assert parse_settings(flag, env).rtmr_sysfs_path == Path("/flag/rtmr3")


class _NoRtmr(MockTdxHandler):
    """A mock TDX that serves quotes but has no RTMR routes (an old simulator)."""

    def do_GET(self) -> None:
        if self.path == "/rtmr":
            self.send_error(404)
        else:
            super().do_GET()


def test_cli_without_an_rtmr3_interface_exits_1_with_one_log_line(tmp_path: Path) -> None:
    with serve_mock_tdx(_NoRtmr) as server:
        argv = [
            sys.executable, "-m", "tdx_identity.cli",
            "--storage-path", str(tmp_path / "s"),
            "--configfs-tsm-path", str(tmp_path / "absent"),
            "--rtmr-sysfs-path", str(tmp_path / "absent-rtmr3"),
            "--mock-tdx-url", server.url,
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"ERROR"' in line]
    assert len(errors) == 1, result.stderr
    assert "RTMR3" in errors[0]["message"] and "Traceback" not in result.stderr
