"""The gocryptfs store: created once, mounted outside STORAGE_PATH, ciphertext only on disk."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from tdx_identity.exceptions import KeyNotFoundError, StoreError
from tdx_identity.workload.store import GocryptfsStore
from tdx_identity.workload.store_key import LocalFileKeyProvider

from .conftest import StoreLayout


def _all_bytes_under(root: Path) -> bytes:
    chunks: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(root):
        chunks.extend(name.encode() for name in dirnames + filenames)
        for name in filenames:
            chunks.append((Path(dirpath) / name).read_bytes())
    return b"\n".join(chunks)


async def test_store_round_trip_keeps_only_ciphertext_under_storage_path(
    store_layout: StoreLayout,
) -> None:
    provider = LocalFileKeyProvider(store_layout.key_path)
    await provider.create_key()
    store = store_layout.store()
    await store.init()
    await store.init()  # idempotent
    started = time.monotonic()
    await store.mount()
    mount_seconds = time.monotonic() - started
    assert store.is_mounted()
    assert mount_seconds < 5

    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    mounts = await store.prepare_dirs(["/data", "/var/lib/app"])
    assert set(mounts.values()) == {"/data", "/var/lib/app"}
    for host_dir in mounts:
        assert host_dir.parent == store_layout.mount_point
        (host_dir / "secret-name.txt").write_bytes(marker * 100)

    await store.unmount()
    assert not store.is_mounted()
    on_disk = _all_bytes_under(store_layout.storage_path)
    assert marker not in on_disk
    assert b"secret-name" not in on_disk
    assert b"var_lib_app" not in on_disk

    await store.mount()
    assert (store.path_for("/data") / "secret-name.txt").read_bytes() == marker * 100


async def test_clear_root_is_private_to_its_owner(mounted_store: GocryptfsStore) -> None:
    assert mounted_store.is_mounted()
    assert stat.S_IMODE(mounted_store.mount_point.stat().st_mode) == 0o700


async def test_mount_is_idempotent_and_unmount_too(mounted_store: GocryptfsStore) -> None:
    await mounted_store.mount()
    assert mounted_store.is_mounted()
    await mounted_store.unmount()
    await mounted_store.unmount()
    assert not mounted_store.is_mounted()


async def test_path_for_is_stable_distinct_and_validated(mounted_store: GocryptfsStore) -> None:
    a = mounted_store.path_for("/data")
    assert a == mounted_store.path_for("/data")
    assert a != mounted_store.path_for("/data2")
    assert mounted_store.path_for("/a_b") != mounted_store.path_for("/a/b")
    with pytest.raises(ValueError, match="Invalid directory path"):
        mounted_store.path_for("/data/../etc")


def test_mount_point_inside_storage_path_is_refused(
    store_layout: StoreLayout, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="outside STORAGE_PATH"):
        GocryptfsStore(
            storage_path=store_layout.storage_path,
            cipher_dir=store_layout.cipher_dir,
            mount_point=store_layout.storage_path / "clear",
            key_provider=LocalFileKeyProvider(store_layout.key_path),
        )
    with pytest.raises(StoreError, match="outside STORAGE_PATH"):
        GocryptfsStore(
            storage_path=store_layout.storage_path,
            cipher_dir=store_layout.cipher_dir,
            mount_point=tmp_path,
            key_provider=LocalFileKeyProvider(store_layout.key_path),
        )
    with pytest.raises(StoreError, match="inside STORAGE_PATH"):
        GocryptfsStore(
            storage_path=store_layout.storage_path,
            cipher_dir=tmp_path / "elsewhere",
            mount_point=store_layout.mount_point,
            key_provider=LocalFileKeyProvider(store_layout.key_path),
        )


async def test_init_without_key_fails_and_leaves_nothing(store_layout: StoreLayout) -> None:
    store = store_layout.store()
    with pytest.raises(KeyNotFoundError):
        await store.init()
    assert not store_layout.cipher_dir.exists()


async def test_mount_with_another_key_is_refused(store_layout: StoreLayout) -> None:
    await LocalFileKeyProvider(store_layout.key_path).create_key()
    await store_layout.store().init()
    other_key = store_layout.storage_path / "other.key"
    await LocalFileKeyProvider(other_key).create_key()
    wrong = GocryptfsStore(
        storage_path=store_layout.storage_path,
        cipher_dir=store_layout.cipher_dir,
        mount_point=store_layout.mount_point,
        key_provider=LocalFileKeyProvider(other_key),
    )
    with pytest.raises(StoreError, match="gocryptfs mount failed"):
        await wrong.mount()
    assert not wrong.is_mounted()


async def test_mount_before_init_is_refused(store_layout: StoreLayout) -> None:
    await LocalFileKeyProvider(store_layout.key_path).create_key()
    with pytest.raises(StoreError, match="initialise it first"):
        await store_layout.store().mount()


async def test_key_reaches_gocryptfs_on_stdin_only(
    store_layout: StoreLayout, tmp_path: Path
) -> None:
    """A stand-in gocryptfs records argv, environment and stdin: the key is only in stdin."""
    record = tmp_path / "record.json"
    fake = tmp_path / "fake-gocryptfs"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ), 'stdin': sys.stdin.read()}},"
        f" open({str(record)!r}, 'w'))\n"
        "sys.exit(1)\n"
    )
    fake.chmod(0o700)
    provider = LocalFileKeyProvider(store_layout.key_path)
    key_hex = (await provider.create_key()).hex()
    store = store_layout.store(gocryptfs=str(fake))
    with pytest.raises(StoreError, match="gocryptfs init failed") as info:
        await store.init()
    assert key_hex not in str(info.value)
    seen = json.loads(record.read_text())
    assert seen["stdin"] == key_hex + "\n"
    assert key_hex not in " ".join(seen["argv"])
    assert all(key_hex not in value for value in seen["env"].values())
    assert not store_layout.cipher_dir.exists()


async def test_dead_gocryptfs_mount_is_recovered(store_layout: StoreLayout) -> None:
    """After the gocryptfs daemon dies (kill -9), mount() detaches the dead mount and remounts."""
    await LocalFileKeyProvider(store_layout.key_path).create_key()
    store = store_layout.store()
    await store.init()
    await store.mount()
    await store.prepare_dirs(["/data"])
    (store.path_for("/data") / "f").write_text("kept")
    pids = _gocryptfs_pids(store_layout.mount_point)
    assert pids
    for pid in pids:
        os.kill(pid, 9)
    assert await asyncio.to_thread(_wait_until_dead, store)
    await store.mount()
    assert (store.path_for("/data") / "f").read_text() == "kept"


def _wait_until_dead(store: GocryptfsStore) -> bool:
    deadline = time.monotonic() + 5
    while store.is_mounted():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _gocryptfs_pids(mount_point: Path) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and str(mount_point).encode() in _cmdline(p)
        and b"gocryptfs" in _cmdline(p)
    ]


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
