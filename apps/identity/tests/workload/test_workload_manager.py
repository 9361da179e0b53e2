"""The real workload manager behind the app: podman, gocryptfs, asyncssh and paramiko, for real.

Configure opens SSH into the container, the owner writes under a persisted dir, expose closes
SSH and publishes the port; restarts and interrupted steps recover to the last committed step;
the owner's bytes never appear in clear under STORAGE_PATH.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from conftest import instance_pubkey, register_operator, register_owner, sign
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr

from tdx_identity import Settings, create_app
from tdx_identity.core.lifecycle import WorkloadPhase
from tdx_identity.core.state import StateStore, WorkloadSection
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.manager import CIPHER_DIR_NAME, PodmanWorkloadManager
from tdx_identity.workload.runtime import PodmanRuntime
from tdx_measure import (
    ConfigEvent,
    EventLog,
    ExecutableEvent,
    MeasurementPolicy,
    SshHostKeyEvent,
    TlsKeyEvent,
    check_log,
    verify_log,
)
from tdx_quote import parse_quote
from tdx_service_kit import RateLimit
from tdx_service_kit.testing import free_port, serve

from .conftest import _lazy_unmount, _remove_labelled, require_program


def port_open(port: int) -> bool:
    """Whether something listens on loopback `port`. The test ports come from the ephemeral
    range, where a connect to a port nobody listens on can, rarely, pick that same port as
    its source and connect to itself (TCP simultaneous open): that is not a listener."""
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            return False
        return bool(sock.getsockname() != sock.getpeername())


@dataclass
class Instance:
    """One instance's settings, its owner key (also as an OpenSSH file), and its fakes."""

    settings: Settings
    owner: Ed25519PrivateKey
    owner_key_file: Path
    quotes: FakeQuoteSource
    registry: FakeRegistry
    image: str
    rtmr: FakeRtmr

    @asynccontextmanager
    async def running(self) -> AsyncIterator[App]:
        """The app served on loopback with the real workload manager (a fresh process's view)."""
        app = create_app(
            self.settings, quote_source=self.quotes, registry=self.registry, rtmr_device=self.rtmr
        )
        async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            yield App(client, app.ctx.service._workload, self)

    def state(self) -> StateStore:
        return StateStore.open(self.settings.storage_path)


@dataclass
class App:
    client: httpx.AsyncClient
    manager: PodmanWorkloadManager
    instance: Instance

    async def signed(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """The owner's body, naming its action and the seq after the instance's last one."""
        last_seq = (await self.client.get("/instance/state")).json()["last_seq"]
        sequenced = {"action": path.rsplit("/", 1)[-1], "seq": last_seq + 1, **body}
        raw = json.dumps(sequenced).encode()
        return await self.client.post(
            path, content=raw, headers={"x-signature": sign(self.instance.owner, raw)}
        )

    async def register(self) -> None:
        token = (await register_operator(self.client, Ed25519PrivateKey.generate())).json()
        response = await register_owner(self.client, self.instance.owner, token["owner_token"])
        assert response.status_code == 200, response.text

    async def configure(self, **changes: Any) -> httpx.Response:
        body = {
            "instance_pubkey": (await instance_pubkey(self.client)).hex(),
            "image": self.instance.image,
            "persist_dirs": ["/www"],
            "port": 8080,
        }
        body.update(changes)
        return await self.signed("/workload/configure", body)

    async def expose(self, image: str | None = None) -> httpx.Response:
        body = {
            "instance_pubkey": (await instance_pubkey(self.client)).hex(),
            "image": image or self.instance.image,
        }
        return await self.signed("/workload/expose", body)

    async def lifecycle(self) -> str:
        state: str = (await self.client.get("/instance/state")).json()["state"]
        return state

    async def host_key(self) -> tuple[str, str]:
        body = (await self.client.get("/workload/ssh-host-key")).json()
        return body["public_key"], body["fingerprint"]


@pytest.fixture
def instance(tmp_path: Path, workload_image: str, front_dir: Path) -> Iterator[Instance]:
    """Settings on free ports, the clear mount outside STORAGE_PATH; all removed afterwards."""
    for program in ("podman", "gocryptfs", "fusermount3"):
        require_program(program)
    name = f"tdxwl-{secrets.token_hex(5)}"
    settings = Settings(
        storage_path=tmp_path / "storage",
        configfs_tsm_path=tmp_path / "no-configfs-tsm",
        rate_limit=RateLimit(per_second=1000.0, burst=1000),
        ssh_listen="127.0.0.1",
        ssh_port=free_port(),
        workload_port=free_port(),
        workload_tls_port=free_port(),
        workload_internal_port=free_port(),
        front_runtime_dir=front_dir,
        workload_publish_host="127.0.0.1",
        clear_mount_dir=tmp_path / "run" / "clear",
        store_key_path=tmp_path / "td-root" / "store.key",
        container_name=name,
    )
    owner = Ed25519PrivateKey.generate()
    key_file = tmp_path / "owner_ed25519"
    key_file.write_bytes(
        owner.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    try:
        rtmr = FakeRtmr()
        yield Instance(
            settings,
            owner,
            key_file,
            FakeQuoteSource(rtmr=rtmr),
            FakeRegistry(),
            workload_image,
            rtmr,
        )
    finally:
        _remove_labelled("podman", name)
        _lazy_unmount(settings.clear_mount_dir)


def ssh_exec(port: int, host_key: str, key_file: Path, command: str) -> tuple[int, bytes]:
    """Run `command` over SSH with `key_file`, accepting only the pinned `host_key`."""
    kind, blob = host_key.split()
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[127.0.0.1]:{port}", kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="anyone",
        key_filename=str(key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command(command, timeout=30)
        out = stdout.read()
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


async def run_ssh(app: App, command: str, *, key_file: Path | None = None) -> tuple[int, bytes]:
    """`ssh_exec` as the owner (or `key_file`), pinning the key GET /workload/ssh-host-key gives."""
    host_key, _ = await app.host_key()
    return await asyncio.to_thread(
        ssh_exec,
        app.instance.settings.ssh_port,
        host_key,
        key_file or app.instance.owner_key_file,
        command,
    )


async def tls_peer_spki_sha256(port: int) -> bytes:
    """SHA-256 of the SPKI of the certificate the front presents on `port` (not verified)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
    finally:
        writer.close()
    certificate = x509.load_der_x509_certificate(der)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


async def http_get(port: int, path: str, wait: float = 20.0) -> httpx.Response:
    """GET from the published workload port, waiting for httpd in the new container."""
    deadline = asyncio.get_running_loop().time() + wait
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            except httpx.TransportError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)


def assert_never_in_clear(storage: Path, marker: bytes) -> None:
    files = [p for p in storage.rglob("*") if p.is_file()]
    assert any(p.parent.name == CIPHER_DIR_NAME for p in files), "no encrypted store found"
    for path in files:
        assert marker not in path.read_bytes(), f"clear data in {path}"


def container_inspect(name: str) -> dict[str, Any]:
    done = subprocess.run(
        ["podman", "container", "inspect", "--format", "json", "--", name],
        capture_output=True,
        check=True,
        timeout=60,
    )
    data: list[dict[str, Any]] = json.loads(done.stdout)
    return data[0]


def published_ports(name: str) -> dict[str, Any]:
    ports: dict[str, Any] = container_inspect(name)["HostConfig"].get("PortBindings") or {}
    return ports


async def test_configure_ssh_write_expose_serves_the_file_and_closes_ssh(
    instance: Instance, tmp_path: Path
) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        key_file = instance.settings.store_key_path
        assert key_file.stat().st_mode & 0o777 == 0o600  # created at owner registration
        assert instance.settings.storage_path not in key_file.parents

        response = await app.configure()
        assert response.status_code == 200, response.text
        assert await app.lifecycle() == "configured"
        assert published_ports(instance.settings.container_name) == {}
        host_config = container_inspect(instance.settings.container_name)["HostConfig"]
        assert host_config["Privileged"] is False
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["PidsLimit"] == 512
        assert host_config["NetworkMode"] != "host"

        status, out = await run_ssh(app, f"printf %s {marker.decode()} > /www/index.html; id -u")
        assert (status, out) == (0, b"0\n")
        other = tmp_path / "other_key"
        other.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        other.chmod(0o600)
        with pytest.raises(paramiko.AuthenticationException):
            await run_ssh(app, "true", key_file=other)

        response = await app.expose()
        assert response.status_code == 200, response.text
        assert await app.lifecycle() == "exposed"
        served = await http_get(instance.settings.workload_port, "/index.html")
        assert (served.status_code, served.content) == (200, marker)
        pubkey = await instance_pubkey(app.client)
        assert served.headers.get_list("x-instance-pubkey") == [pubkey.hex()], "through the front"
        bindings = container_inspect(instance.settings.container_name)["HostConfig"]["PortBindings"]
        internal = str(instance.settings.workload_internal_port)
        assert {(b["HostIp"], b["HostPort"]) for v in bindings.values() for b in v} == {
            ("127.0.0.1", internal)
        }, "the container's port is published on loopback only"
        assert not port_open(instance.settings.ssh_port)
        assert (await app.expose()).status_code == 400
        assert (await app.configure()).status_code == 400

    assert_never_in_clear(instance.settings.storage_path, marker)
    section = instance.state().current.workload
    assert section is not None and section.phase is WorkloadPhase.EXPOSED


async def test_expose_re_registers_a_log_naming_podmans_image_id(instance: Instance) -> None:
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await app.expose()).status_code == 200
    request = instance.registry.accepted[-1]
    assert request.event_log is not None
    log = EventLog.from_json(request.event_log)
    rtmr3 = parse_quote(request.attestation_quote, allow_zero_padding=True).body.rtmr3
    check_log(verify_log(log, rtmr3), MeasurementPolicy())
    roles = {event.role for event in log.events if isinstance(event, ExecutableEvent)}
    assert roles == {"podman", "oci-runtime", "conmon", "gocryptfs", "fusermount", "nginx"}
    image_id = container_inspect(instance.settings.container_name)["Image"]
    assert log.workload is not None
    assert (log.workload.transition, log.workload.image) == ("expose", instance.image)
    assert log.workload.image_id.removeprefix("sha256:") == image_id


async def test_expose_ends_live_ssh_sessions(instance: Instance) -> None:
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        session = asyncio.create_task(run_ssh(app, "sleep 60; echo survived"))
        await asyncio.sleep(1.5)
        assert (await app.expose()).status_code == 200
        status, out = await asyncio.wait_for(session, 20)
        assert b"survived" not in out and status != 0
        assert not port_open(instance.settings.ssh_port)


async def test_an_absent_image_is_400_and_changes_nothing(instance: Instance) -> None:
    async with instance.running() as app:
        await app.register()
        before = instance.state().current
        response = await app.configure(image=f"localhost/absent-{secrets.token_hex(4)}:1")
        assert response.status_code == 400
        assert "not in local storage" in response.json()["error"]
        assert instance.state().current == before
        assert not port_open(instance.settings.ssh_port)


async def test_restart_before_expose_remounts_recreates_and_reopens_ssh(
    instance: Instance,
) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        first_key = await app.host_key()
        assert (await run_ssh(app, f"echo {marker.decode()} > /www/kept"))[0] == 0
    assert not port_open(instance.settings.ssh_port)  # a clean stop closes SSH
    # As after a reboot: no container, no clear mount.
    _remove_labelled("podman", instance.settings.container_name)
    _lazy_unmount(instance.settings.clear_mount_dir)

    async with instance.running() as app:
        assert await app.lifecycle() == "configured"
        assert await app.host_key() != first_key, "every start makes a new SSH host key"
        assert await run_ssh(app, "cat /www/kept") == (0, marker + b"\n")
        assert published_ports(instance.settings.container_name) == {}
        assert (await app.configure(persist_dirs=["/www", "/data"])).status_code == 200
        assert app.manager.ssh_serving  # reconfigure keeps SSH open
        assert await run_ssh(app, "cat /www/kept; ls -d /data") == (0, marker + b"\n/data\n")
    assert_never_in_clear(instance.settings.storage_path, marker)


async def test_restart_after_expose_serves_again_and_never_opens_ssh(instance: Instance) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, f"printf %s {marker.decode()} > /www/index.html"))[0] == 0
        assert (await app.expose()).status_code == 200
    _remove_labelled("podman", instance.settings.container_name)
    _lazy_unmount(instance.settings.clear_mount_dir)

    async with instance.running() as app:
        assert await app.lifecycle() == "exposed"
        served = await http_get(instance.settings.workload_port, "/index.html")
        assert served.content == marker
        assert not app.manager.ssh_serving
        assert not port_open(instance.settings.ssh_port)


async def test_an_expose_that_began_but_was_not_committed_is_not_finished_at_start(
    instance: Instance,
) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, f"printf %s {marker.decode()} > /www/index.html"))[0] == 0
    # The process died right after recording "exposing" (or the registry refused the expose):
    # the lifecycle still says configured.
    store = instance.state()
    section = store.current.workload
    assert section is not None and section.phase is WorkloadPhase.CONFIGURED
    exposing = WorkloadSection(WorkloadPhase.EXPOSING, section.config, section.image_id)
    store.commit(replace(store.current, workload=exposing))
    assert store.current.lifecycle.value == "configured"

    async with instance.running() as app:
        assert await app.lifecycle() == "configured"
        assert not port_open(instance.settings.ssh_port)
        assert not port_open(instance.settings.workload_port)
        assert (await app.configure()).status_code == 400
        assert not port_open(instance.settings.ssh_port)
        assert (await app.expose()).status_code == 200
        served = await http_get(instance.settings.workload_port, "/index.html")
        assert served.content == marker
    assert instance.state().current.lifecycle.value == "exposed"


async def test_a_crash_during_a_first_configure_rolls_back_to_no_workload(
    instance: Instance, workload_image: str
) -> None:
    async with instance.running() as app:
        await app.register()
    # The process died mid-configure: the container was started, the service committed nothing.
    manager_view = WorkloadSection.from_json(
        {
            "version": 1,
            "phase": "configuring",
            "config": {"image": workload_image, "persist_dirs": ["/www"], "port": 8080},
        }
    )
    assert manager_view is not None
    store = instance.state()
    store.commit(replace(store.current, workload=manager_view))
    runtime = PodmanRuntime(label_value=instance.settings.container_name)
    await runtime.recreate(
        instance.settings.container_name,
        WorkloadConfig(image=workload_image, persist_dirs=(), port=8080),
        {},
        None,
    )
    assert await runtime.is_running(instance.settings.container_name)

    async with instance.running() as app:
        assert await app.lifecycle() == "owner_registered"
        assert not port_open(instance.settings.ssh_port)
        assert await runtime.managed_containers() == []
        assert instance.state().current.workload is None
        saved = json.loads(instance.state().path.read_text())
        assert saved["workload"] == {}
        assert (await app.configure()).status_code == 200  # and configure works afterwards


async def test_a_crash_during_a_reconfigure_rolls_back_to_the_committed_config(
    instance: Instance, workload_image: str
) -> None:
    async with instance.running() as app:
        await app.register()
        assert (await app.configure(persist_dirs=["/www"])).status_code == 200
    store = instance.state()
    section = store.current.workload
    assert section is not None
    unfinished = WorkloadSection(
        WorkloadPhase.CONFIGURING,
        replace(section.config, persist_dirs=("/www", "/half-done")),
        section.image_id,
    )
    store.commit(replace(store.current, workload=unfinished))

    async with instance.running() as app:
        assert await app.lifecycle() == "configured"
        assert app.manager.ssh_serving
        recovered = app.manager.section()
        assert recovered is not None
        assert (recovered.phase, recovered.config) == (WorkloadPhase.CONFIGURED, section.config)
        mounts = {
            m["Destination"] for m in container_inspect(instance.settings.container_name)["Mounts"]
        }
        assert "/half-done" not in mounts and "/www" in mounts


async def test_an_expose_that_fails_keeps_ssh_closed_and_can_be_retried(
    instance: Instance,
) -> None:
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", instance.settings.workload_port))
            squatter.listen()
            response = await app.expose()
            assert response.status_code == 500
            assert response.json() == {"error": "workload runtime failed"}
        assert not port_open(instance.settings.ssh_port)
        assert await app.lifecycle() == "configured"
        assert (await app.configure()).status_code == 400
        assert not port_open(instance.settings.ssh_port)
        assert (await app.expose()).status_code == 200
        assert await app.lifecycle() == "exposed"
        assert (await http_get(instance.settings.workload_port, "/")).status_code in (200, 404)


def container_id(name: str) -> str:
    found: str = container_inspect(name)["Id"]
    return found


async def test_restart_keeps_a_healthy_exposed_container_running(instance: Instance) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, f"printf %s {marker.decode()} > /www/index.html"))[0] == 0
        assert (await app.expose()).status_code == 200
        image_id = app.manager.running_image_id()
        first = (await app.client.get("/instance/state")).json()
        assert first["front"] == "serving"
        assert await tls_peer_spki_sha256(instance.settings.workload_tls_port) == bytes.fromhex(
            first["tls_spki_sha256"]
        )
    before = container_id(instance.settings.container_name)
    events_before = len(EventLog.from_json(instance.registry.accepted[-1].event_log or "").events)
    # The stopped service left the front serving the workload (for its next start to adopt).
    assert (await http_get(instance.settings.workload_port, "/index.html")).content == marker
    assert await tls_peer_spki_sha256(instance.settings.workload_tls_port) == bytes.fromhex(
        first["tls_spki_sha256"]
    )

    async with instance.running() as app:
        assert await app.lifecycle() == "exposed"
        assert container_id(instance.settings.container_name) == before  # not recreated
        assert app.manager.running_image_id() == image_id
        served = await http_get(instance.settings.workload_port, "/index.html")
        assert served.content == marker
        assert not app.manager.ssh_serving
        assert not port_open(instance.settings.ssh_port)
        state = (await app.client.get("/instance/state")).json()
        assert state["front"] == "serving", "recovery adopted the front"
        assert state["tls_spki_sha256"] != first["tls_spki_sha256"], "with a new TLS key"
        assert await tls_peer_spki_sha256(instance.settings.workload_tls_port) == bytes.fromhex(
            state["tls_spki_sha256"]
        )
    # Re-registered at start with the log continued by this start's settings, SSH host key and
    # TLS key only: the kept workload is not measured twice.
    request = instance.registry.accepted[-1]
    events = EventLog.from_json(request.event_log or "").events
    assert len(events) == events_before + 3
    assert isinstance(events[-3], ConfigEvent)
    assert isinstance(events[-2], SshHostKeyEvent)
    assert isinstance(events[-1], TlsKeyEvent)
    assert events[-1].spki_sha256.hex() == state["tls_spki_sha256"]


async def test_restart_keeps_a_healthy_configured_container_and_reopens_ssh(
    instance: Instance,
) -> None:
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, "echo kept > /tmp/in-the-container"))[0] == 0
    before = container_id(instance.settings.container_name)

    async with instance.running() as app:
        assert await app.lifecycle() == "configured"
        assert container_id(instance.settings.container_name) == before
        assert await run_ssh(app, "cat /tmp/in-the-container") == (0, b"kept\n")
        assert published_ports(instance.settings.container_name) == {}


async def test_restart_recreates_a_container_that_differs(instance: Instance) -> None:
    marker = secrets.token_hex(16).encode()
    async with instance.running() as app:
        await app.register()
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, f"printf %s {marker.decode()} > /www/index.html"))[0] == 0
        assert (await app.expose()).status_code == 200
    name, settings = instance.settings.container_name, instance.settings
    # Same name, label, image, mounts and port, but weaker confinement than configured.
    mounts = {
        Path(m["Source"]): m["Destination"]
        for m in container_inspect(name)["Mounts"]
        if m["Type"] == "bind"
    }
    weaker = PodmanRuntime(
        label_value=name,
        publish_host="127.0.0.1",
        hardening=replace(settings.hardening, pids_limit=4096),
    )
    config = WorkloadConfig(image=instance.image, persist_dirs=("/www",), port=8080)
    await weaker.recreate(name, config, mounts, settings.workload_internal_port)
    tampered = container_id(name)
    assert container_inspect(name)["HostConfig"]["PidsLimit"] == 4096

    async with instance.running() as app:
        assert await app.lifecycle() == "exposed"
        assert container_id(name) != tampered
        assert container_inspect(name)["HostConfig"]["PidsLimit"] == 512
        served = await http_get(settings.workload_port, "/index.html")
        assert served.content == marker
        assert not port_open(settings.ssh_port)

    # A stopped container is not healthy either: recreated, not left stopped.
    await asyncio.to_thread(
        subprocess.run, ["podman", "stop", "--time", "1", "--", name], check=True, timeout=60
    )
    stopped = container_id(name)
    async with instance.running() as app:
        assert container_id(name) != stopped
        assert container_inspect(name)["State"]["Running"] is True
        assert (await http_get(settings.workload_port, "/index.html")).content == marker


def _podman_out(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, check=True, timeout=60)
    return done.stdout.decode().strip()


async def podman(*args: str) -> str:
    """podman's stdout, run off the event loop (the app under test serves on it)."""
    return await asyncio.to_thread(_podman_out, *args)


async def test_a_retagged_image_is_never_run_expose_keeps_the_pin_and_recovery_refuses(
    instance: Instance, tmp_path: Path
) -> None:
    tag = f"localhost/tdx-identity-retag-{secrets.token_hex(4)}:1"
    await podman("tag", instance.image, tag)
    pinned = await podman("image", "inspect", "--format", "{{.Id}}", tag)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {pinned}\nLABEL retagged=1\n")
    other = f"localhost/tdx-identity-other-{secrets.token_hex(4)}:1"
    try:
        await podman("build", "--pull=never", "--quiet", "--tag", other, str(context))
        replacement = await podman("image", "inspect", "--format", "{{.Id}}", other)
        assert replacement != pinned
        name, settings = instance.settings.container_name, instance.settings
        async with instance.running() as app:
            await app.register()
            assert (await app.configure(image=tag)).status_code == 200
            await podman("tag", other, tag)  # a retag after configure changes nothing
            assert (await app.expose(image=tag)).status_code == 200
            assert container_inspect(name)["Image"] == pinned
            assert app.manager.running_image_id() == pinned
            section = instance.state().current.workload
            assert section is not None and section.image_id == pinned
        log = EventLog.from_json(instance.registry.accepted[-1].event_log or "")
        assert log.workload is not None and log.workload.image_id == pinned

        async with instance.running() as app:
            state = (await app.client.get("/instance/state")).json()
            assert (state["state"], state["workload"]) == ("exposed", "refused")
            assert state["workload_reason"] == (
                f"{tag} now names {replacement}, not the pinned image {pinned}"
            )
            assert app.manager.running_image_id() is None
            exists = await asyncio.to_thread(
                subprocess.run, ["podman", "container", "exists", "--", name], timeout=60
            )
            assert exists.returncode == 1, "the container of the retagged image was not removed"
            assert not port_open(settings.workload_port)
            assert not port_open(settings.ssh_port)
    finally:
        _remove_labelled("podman", instance.settings.container_name)
        _run_quietly(["podman", "rmi", "--force", tag, other])


async def test_a_configured_workload_retagged_while_stopped_is_refused_until_configured_again(
    instance: Instance, tmp_path: Path
) -> None:
    tag = f"localhost/tdx-identity-retag-{secrets.token_hex(4)}:1"
    await podman("tag", instance.image, tag)
    pinned = await podman("image", "inspect", "--format", "{{.Id}}", tag)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {pinned}\nLABEL retagged=1\n")
    name, settings = instance.settings.container_name, instance.settings
    try:
        async with instance.running() as app:
            await app.register()
            assert (await app.configure(image=tag)).status_code == 200
        await podman("build", "--pull=never", "--quiet", "--tag", tag, str(context))
        replacement = await podman("image", "inspect", "--format", "{{.Id}}", tag)

        async with instance.running() as app:
            state = (await app.client.get("/instance/state")).json()
            assert (state["state"], state["workload"]) == ("configured", "refused")
            assert replacement in state["workload_reason"] and pinned in state["workload_reason"]
            exists = await asyncio.to_thread(
                subprocess.run, ["podman", "container", "exists", "--", name], timeout=60
            )
            assert exists.returncode == 1, "the container was kept although its image was retagged"
            assert not app.manager.ssh_serving and not port_open(settings.ssh_port)
            assert (await app.expose(image=tag)).status_code == 500
            assert not port_open(settings.workload_port)

            assert (await app.configure(image=tag)).status_code == 200  # the owner pins again
            state = (await app.client.get("/instance/state")).json()
            assert (state["workload"], state["workload_reason"]) == ("running", None)
            assert container_inspect(name)["Image"] == replacement
    finally:
        _remove_labelled("podman", instance.settings.container_name)
        _run_quietly(["podman", "rmi", "--force", tag])


def _run_quietly(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, check=False, timeout=60)
