"""The store on each backend (REGISTRY_TEST_BACKEND) and the sealing of resources at rest."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kbs_helpers import KBS, Broker, Guest, raw_public

from tdx_kbs import DatabaseTarget, KbsStore, default_policy_text
from tdx_kbs.sealing import (
    ResourceSealer,
    SealError,
    StorageKeyError,
    load_or_create_storage_key,
)
from tdx_kbs.store import ACTION_POLICY_SET, ACTION_RESOURCE_PUT
from tdx_kbs_protocol import TeeKeyPair

Start = Callable[..., AbstractAsyncContextManager[Broker]]
ADMIN = "ab" * 32
PATH = "tdx-identity/store-key/" + "cd" * 32


async def test_resources_round_trip_replace_and_audit(db_target: DatabaseTarget) -> None:
    store = await KbsStore.open(db_target)
    try:
        assert await store.get_resource(PATH) is None
        at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        await store.put_resource(PATH, b"sealed-1", ADMIN, at)
        await store.put_resource(PATH, b"sealed-2", "ef" * 32, at)
        stored = await store.get_resource(PATH)
        assert stored is not None
        assert (stored.sealed, stored.uploader, stored.updated_at) == (b"sealed-2", "ef" * 32, at)
        audit = await store.audit_entries()
        assert [(a.admin, a.action, a.target) for a in audit] == [
            (ADMIN, ACTION_RESOURCE_PUT, PATH),
            ("ef" * 32, ACTION_RESOURCE_PUT, PATH),
        ]
    finally:
        await store.close()


async def test_policy_current_and_history(db_target: DatabaseTarget) -> None:
    store = await KbsStore.open(db_target)
    try:
        assert await store.current_policy() is None
        at = datetime(2026, 12, 1, tzinfo=UTC)
        first = await store.set_policy("package policy\n", "01" * 32, ADMIN, at)
        second = await store.set_policy("package policy\nx := 1\n", "02" * 32, ADMIN, at)
        assert second.version > first.version
        current = await store.current_policy()
        assert current is not None and current.text == "package policy\nx := 1\n"
        assert [p.sha256 for p in await store.policy_history()] == ["01" * 32, "02" * 32]
        audit = await store.audit_entries()
        assert [(a.action, a.target) for a in audit] == [
            (ACTION_POLICY_SET, "01" * 32),
            (ACTION_POLICY_SET, "02" * 32),
        ]
    finally:
        await store.close()


async def test_state_survives_reopen(db_target: DatabaseTarget) -> None:
    store = await KbsStore.open(db_target)
    await store.put_resource(PATH, b"sealed", ADMIN, datetime.now(UTC))
    await store.close()
    again = await KbsStore.open(db_target)
    try:
        stored = await again.get_resource(PATH)
        assert stored is not None and stored.sealed == b"sealed"
    finally:
        await again.close()


def test_storage_key_created_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "storage.key"
    key = load_or_create_storage_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_storage_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["storage.key"]


def test_storage_key_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "storage.key"
    load_or_create_storage_key(path)
    path.chmod(0o644)
    with pytest.raises(StorageKeyError, match="chmod 600"):
        load_or_create_storage_key(path)


def test_storage_key_refused_when_wrong_size_or_a_link(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(StorageKeyError, match="32 bytes"):
        load_or_create_storage_key(short)
    real = tmp_path / "real.key"
    load_or_create_storage_key(real)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(StorageKeyError):
        load_or_create_storage_key(link)


def test_sealed_resource_binds_its_path_and_detects_tampering() -> None:
    sealer = ResourceSealer(os.urandom(32))
    secret = os.urandom(32)
    sealed = sealer.seal(PATH, secret)
    assert secret not in sealed
    assert sealer.open(PATH, sealed) == secret
    with pytest.raises(SealError):
        sealer.open("tdx-identity/store-key/" + "00" * 32, sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        sealer.open(PATH, bytes(tampered))
    with pytest.raises(SealError):
        ResourceSealer(os.urandom(32)).open(PATH, sealed)
    assert "storage key>" in repr(sealer)


async def test_broker_flow_on_each_backend(db_target: DatabaseTarget, start: Start) -> None:
    """Upload, policy change, attest and release with the store on this backend."""
    async with start(database=db_target) as broker:
        guest = Guest(broker.sim, owner=broker.admin)
        secret = os.urandom(32)
        assert (await broker.put(guest.store_key_path, secret)).status_code == 200
        assert (await broker.set_policy(default_policy_text())).status_code == 200
        tee = TeeKeyPair.generate()
        async with broker.guest_client() as client:
            assert (await guest.attest(client, tee)).status_code == 200
            got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert got.status_code == 200, got.text
        assert tee.decrypt(got.json()) == secret
        audit = await broker.store.audit_entries()
        admin = raw_public(broker.admin).hex()
        assert [(a.admin, a.action) for a in audit] == [
            (admin, ACTION_RESOURCE_PUT),
            (admin, ACTION_POLICY_SET),
        ]
        assert audit[1].target == hashlib.sha256(default_policy_text().encode()).hexdigest()
