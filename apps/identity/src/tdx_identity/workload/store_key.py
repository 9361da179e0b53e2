"""The encrypted workload store's key: where it is made and kept (`LocalFileKeyProvider`).

`LocalFileKeyProvider` keeps a random 256-bit key in a 0600 file inside the TD's state. It
protects the persisted data against theft of the disk image (the key file must be taken with
it, and an attested key service will later keep the key off the disk entirely), but it does
NOT protect against a host or anyone else who can read the TD's key file: whoever reads that
file can decrypt the store. The seed's SHA-256(owner pubkey || PPID) key is not used: both
inputs are public in the registry.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Final

from tdx_identity.exceptions import (
    KeyExistsError,
    KeyNotFoundError,
    KeyProviderError,
    UnsafeFileError,
)
from tdx_identity.files import atomic_create, ensure_private_dir, read_private

__all__ = [
    "KEY_BYTES",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyProviderError",
    "LocalFileKeyProvider",
]

KEY_BYTES: Final = 32


class LocalFileKeyProvider:
    """A random key in a 0600 file, created once, never overwritten (a `KeyProvider`)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    async def get_key(self) -> bytes:
        return await asyncio.to_thread(self._read)

    async def create_key(self) -> bytes:
        return await asyncio.to_thread(self._create)

    def _read(self) -> bytes:
        try:
            data = read_private(self._path, max_bytes=KEY_BYTES, owned_by_us=True)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no store key at {self._path}") from None
        except UnsafeFileError as exc:
            raise KeyProviderError(f"store key unusable: {exc}") from None
        except OSError as exc:
            raise KeyProviderError(f"cannot open store key {self._path}: {exc.strerror}") from None
        if len(data) != KEY_BYTES:
            raise KeyProviderError(
                f"store key {self._path} has {len(data)} bytes, expected {KEY_BYTES}"
            )
        return data

    def _create(self) -> bytes:
        ensure_private_dir(self._path.parent)
        key = secrets.token_bytes(KEY_BYTES)
        if not atomic_create(self._path, key, mode=0o600):
            raise KeyExistsError(
                f"a store key already exists at {self._path}; refusing to replace it"
            )
        return key
