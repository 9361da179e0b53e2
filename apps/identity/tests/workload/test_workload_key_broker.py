"""The real workload (podman, gocryptfs, SSH) with the store key from a key broker (the fake KBS
of `tests/kbs_fake.py`, which checks binding, possession and event log replay): configure,
write over SSH, reboot with the broker down (locked: nothing runs, SSH closed), the broker back
(recovered by itself, the data read back), and the key in no file at any point; a host in the
middle at the first configure gets no store, no mount and no container made."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_fake import FakeKbs, MitmKbs

from tdx_identity import create_app
from tdx_kbs_protocol import seal_store_key
from tdx_service_kit.testing import serve

from . import test_workload_manager as manager_tests
from .conftest import _lazy_unmount, _remove_labelled
from .test_workload_manager import App, Instance, port_open, run_ssh

instance = manager_tests.instance
"""The real workload's settings and fakes (`test_workload_manager.instance`)."""

KBS_URL = "http://kbs.test:3020"


def key_forms(key: bytes) -> list[bytes]:
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key).rstrip(b"="),
        base64.urlsafe_b64encode(key).rstrip(b"="),
    ]


def files_holding(roots: list[Path], key: bytes, skip: Path) -> list[Path]:
    forms = key_forms(key)
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if skip in path.parents or path == skip:
                continue
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(form in data for form in forms):
                    found.append(path)
    return found


def temp_entries() -> set[Path]:
    return set(Path(tempfile.gettempdir()).iterdir())


def new_temp_files_holding(before: set[Path], key: bytes) -> list[Path]:
    forms = key_forms(key)
    return [
        path
        for path in temp_entries() - before
        if path.is_file() and any(form in path.read_bytes() for form in forms)
    ]


def key_file_exists(path: Path) -> bool:
    return path.exists()


@asynccontextmanager
async def running(instance: Instance, kbs: FakeKbs | MitmKbs) -> AsyncIterator[App]:
    settings = replace(
        instance.settings,
        key_broker_url=KBS_URL,
        key_broker_retry_initial=0.05,
        key_broker_retry_max=0.2,
    )
    app = create_app(
        settings,
        quote_source=instance.quotes,
        registry=instance.registry,
        rtmr_device=instance.rtmr,
        key_broker_transport=kbs.transport(),
    )
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield App(client, app.ctx.service._workload, instance)


async def state_of(app: App) -> dict[str, Any]:
    body: dict[str, Any] = (await app.client.get("/instance/state")).json()
    return body


async def wait_until_running(app: App) -> None:
    async with asyncio.timeout(30):
        while True:
            if (await state_of(app))["workload"] == "running":
                return
            await asyncio.sleep(0.05)


async def test_a_broker_key_survives_a_reboot_with_the_broker_down_and_is_never_written(
    instance: Instance, tmp_path: Path
) -> None:
    kbs = FakeKbs()
    key = secrets.token_bytes(32)
    marker = secrets.token_hex(16).encode()
    temp_before = temp_entries()
    async with running(instance, kbs) as app:
        await app.register()
        kbs.owner = instance.owner.public_key().public_bytes_raw()
        instance_key = bytes.fromhex((await app.client.get("/instance/pubkey")).json()["pubkey"])
        kbs.put_store_key(instance_key, key, instance.owner)
        assert (await app.configure()).status_code == 200
        assert (await run_ssh(app, f"echo {marker.decode()} > /www/kept"))[0] == 0
    assert not key_file_exists(instance.settings.store_key_path), "no local key file"
    # As after a reboot: no container, no clear mount; and the broker is down.
    _remove_labelled("podman", instance.settings.container_name)
    _lazy_unmount(instance.settings.clear_mount_dir)
    kbs.down = True

    async with running(instance, kbs) as app:
        state = await state_of(app)
        assert state["state"] == "configured"
        assert state["workload"] == "locked"
        assert "key broker is unavailable" in state["workload_reason"]
        assert not app.manager._store.is_mounted()
        assert app.manager.running_image_id() is None
        assert not port_open(instance.settings.ssh_port), "SSH stays closed while locked"
        kbs.down = False
        await wait_until_running(app)
        assert await run_ssh(app, "cat /www/kept") == (0, marker + b"\n")
    assert len(kbs.released) == 2

    assert files_holding([tmp_path], key, skip=instance.settings.clear_mount_dir) == []
    assert new_temp_files_holding(temp_before, key) == []


def container_exists(name: str) -> bool:
    done = subprocess.run(
        ["podman", "container", "exists", "--", name], capture_output=True, timeout=60
    )
    return done.returncode == 0


async def test_a_host_in_the_middle_at_the_first_configure_gets_nothing_made(
    instance: Instance,
) -> None:
    """A validly encrypted JWE of a key the host chose (bare, or in an envelope signed by a key
    of its own) is refused: no gocryptfs store is initialised under it, nothing is mounted, no
    container runs, SSH stays closed, the state is unchanged; the owner's key then works."""
    host_key = secrets.token_bytes(32)
    mitm = MitmKbs(host_key)
    cipher_dir = instance.settings.storage_path / "workload" / "store.crypt"
    async with running(instance, mitm) as app:
        await app.register()
        instance_key = bytes.fromhex((await app.client.get("/instance/pubkey")).json()["pubkey"])
        before = instance.state().current
        for payload in (
            host_key,
            seal_store_key(Ed25519PrivateKey.generate(), instance_key, host_key),
        ):
            mitm.payload = payload
            response = await app.configure()
            assert response.status_code == 503
            assert "is not the owner's store key for this instance" in response.json()["error"]
            assert instance.state().current == before
            assert not (cipher_dir / "gocryptfs.conf").exists(), "no store made under its key"
            assert not app.manager._store.is_mounted()
            assert not container_exists(instance.settings.container_name)
            assert not port_open(instance.settings.ssh_port)
        assert mitm.released == 2
    kbs = FakeKbs(owner=instance.owner.public_key().public_bytes_raw())
    kbs.put_store_key(instance_key, secrets.token_bytes(32), instance.owner)
    async with running(instance, kbs) as app:
        assert (await app.configure()).status_code == 200
        assert (cipher_dir / "gocryptfs.conf").exists()
