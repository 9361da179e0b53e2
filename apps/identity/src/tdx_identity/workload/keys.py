"""Where the encrypted store's key comes from.

`LocalFileKeyProvider` keeps a random 256-bit key in a 0600 file inside the TD's state. It
protects the persisted data against theft of the disk image (the key file must be taken with
it, and an attested key service will later keep the key off the disk entirely), but it does
NOT protect against a host or anyone else who can read the TD's key file: whoever reads that
file can decrypt the store. The seed's SHA-256(owner pubkey || PPID) key is not used: both
inputs are public in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "KEY_BYTES",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyProvider",
    "KeyProviderError",
    "LocalFileKeyProvider",
]

KEY_BYTES: Final = 32


class KeyProviderError(Exception):
    """The store key cannot be read or created; the message says why (never the key)."""


class KeyNotFoundError(KeyProviderError):
    """No key has been created yet."""


class KeyExistsError(KeyProviderError):
    """A key already exists: creating another would make the store unreadable."""


class KeyProvider(Protocol):
    """Source of the 256-bit key of the encrypted store."""

    async def get_key(self) -> bytes:
        """Return the existing key; raise `KeyNotFoundError` if none was created."""
        ...

    async def create_key(self) -> bytes:
        """Create, keep and return a new key; raise `KeyExistsError` if one exists."""
        ...


class LocalFileKeyProvider:
    """A random key in a 0600 file, created once, never overwritten."""

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
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no store key at {self._path}") from None
        except OSError as exc:
            raise KeyProviderError(f"cannot open store key {self._path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyProviderError(f"store key {self._path} is not a regular file")
            if info.st_mode & 0o077:
                raise KeyProviderError(
                    f"store key {self._path} is accessible to group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):o}); expected 0600"
                )
            if info.st_uid != os.geteuid():
                raise KeyProviderError(f"store key {self._path} is not owned by this user")
            data = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) != KEY_BYTES:
            raise KeyProviderError(
                f"store key {self._path} has {len(data)} bytes, expected {KEY_BYTES}"
            )
        return data

    def _create(self) -> bytes:
        directory = self._path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        tmp = directory / f".{self._path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(key)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() refuses an existing target: two concurrent creators cannot both win.
            try:
                os.link(tmp, self._path)
            except FileExistsError:
                raise KeyExistsError(
                    f"a store key already exists at {self._path}; refusing to replace it"
                ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return key
