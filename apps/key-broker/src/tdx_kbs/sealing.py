"""Resources at rest: AES-256-GCM under the broker's storage key, the resource path as AAD.

The storage key is 32 random bytes in its own file (`--storage-key-path`), never in the
database: a copy of the database alone reveals no resource, and a sealed resource moved to
another path does not open (the path is authenticated). The file is created once, mode 0600,
by writing a temporary file, fsyncing it and linking it into place (which fails if another
process created the key first: then that key is used), then fsyncing the directory. It is
read without following a symbolic link.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("tdx_kbs.sealing")

STORAGE_KEY_LEN: Final = 32
NONCE_LEN: Final = 12
SEAL_VERSION: Final = b"\x01"


class StorageKeyError(Exception):
    """The storage key file cannot be created or read, or is not a storage key."""


class SealError(Exception):
    """A stored resource does not open under the storage key (altered, or moved)."""


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageKeyError(f"cannot open the storage key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StorageKeyError(f"the storage key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise StorageKeyError(
                f"the storage key {path} is readable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):o}): chmod 600 it"
            )
        key = handle.read(STORAGE_KEY_LEN + 1)
    if len(key) != STORAGE_KEY_LEN:
        raise StorageKeyError(f"the storage key {path} is not {STORAGE_KEY_LEN} bytes")
    return key


def _create_key(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(STORAGE_KEY_LEN))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.info("storage key created", extra={"path": str(path)})
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_storage_key(path: Path) -> bytes:
    """The storage key in `path`, created (0600, atomically) when the file does not exist."""
    if not os.path.lexists(path):
        try:
            _create_key(path)
        except OSError as exc:
            raise StorageKeyError(f"cannot create the storage key {path}: {exc.strerror}") from None
    return _read_key(path)


class ResourceSealer:
    """Seals and opens resources under one storage key (the key stays in this object)."""

    def __init__(self, storage_key: bytes) -> None:
        if len(storage_key) != STORAGE_KEY_LEN:
            raise StorageKeyError(f"a storage key is {STORAGE_KEY_LEN} bytes")
        self._aead = AESGCM(storage_key)

    def __repr__(self) -> str:
        return "ResourceSealer(<storage key>)"

    def seal(self, path: str, plaintext: bytes) -> bytes:
        """version || nonce || AES-256-GCM(plaintext, AAD = version || path)."""
        nonce = secrets.token_bytes(NONCE_LEN)
        aad = SEAL_VERSION + path.encode("utf-8")
        return SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, path: str, sealed: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_LEN + 16 or sealed[:1] != SEAL_VERSION:
            raise SealError(f"the stored resource {path} is not a sealed resource")
        nonce = sealed[1 : 1 + NONCE_LEN]
        try:
            return self._aead.decrypt(
                nonce, sealed[1 + NONCE_LEN :], SEAL_VERSION + path.encode("utf-8")
            )
        except InvalidTag:
            raise SealError(
                f"the stored resource {path} does not open under the storage key"
            ) from None
