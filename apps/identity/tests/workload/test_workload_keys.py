"""The local store key: random, 256 bits, 0600, created once and never replaced."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tdx_identity.exceptions import KeyExistsError, KeyNotFoundError, KeyProviderError
from tdx_identity.workload.store_key import LocalFileKeyProvider


async def test_key_is_created_once_with_mode_0600_and_read_back(tmp_path: Path) -> None:
    provider = LocalFileKeyProvider(tmp_path / "keys" / "store.key")
    key = await provider.create_key()
    assert len(key) == 32
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(provider.path.parent.stat().st_mode) == 0o700
    assert await provider.get_key() == key
    assert await LocalFileKeyProvider(provider.path).get_key() == key
    assert [p.name for p in provider.path.parent.iterdir()] == ["store.key"]


async def test_a_second_create_is_refused_and_keeps_the_first_key(tmp_path: Path) -> None:
    provider = LocalFileKeyProvider(tmp_path / "store.key")
    key = await provider.create_key()
    with pytest.raises(KeyExistsError):
        await provider.create_key()
    assert await provider.get_key() == key


async def test_concurrent_creates_have_exactly_one_winner(tmp_path: Path) -> None:
    provider = LocalFileKeyProvider(tmp_path / "store.key")
    results = await asyncio.gather(
        *(provider.create_key() for _ in range(8)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, bytes)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExistsError) for r in results if not isinstance(r, bytes))
    assert await provider.get_key() == winners[0]


async def test_keys_are_random(tmp_path: Path) -> None:
    keys = {await LocalFileKeyProvider(tmp_path / f"k{i}").create_key() for i in range(4)}
    assert len(keys) == 4


async def test_missing_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFoundError):
        await LocalFileKeyProvider(tmp_path / "absent").get_key()


async def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    provider = LocalFileKeyProvider(tmp_path / "store.key")
    await provider.create_key()
    provider.path.chmod(0o644)
    with pytest.raises(KeyProviderError, match="0600") as info:
        await provider.get_key()
    assert not isinstance(info.value, KeyNotFoundError)


async def test_key_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    path.write_bytes(b"\x01" * 31)
    path.chmod(0o600)
    with pytest.raises(KeyProviderError, match="31 bytes"):
        await LocalFileKeyProvider(path).get_key()


async def test_symlinked_key_is_refused(tmp_path: Path) -> None:
    real = LocalFileKeyProvider(tmp_path / "real.key")
    await real.create_key()
    (tmp_path / "link.key").symlink_to(real.path)
    with pytest.raises(KeyProviderError):
        await LocalFileKeyProvider(tmp_path / "link.key").get_key()
