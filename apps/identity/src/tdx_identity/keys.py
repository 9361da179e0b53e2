"""The instance ed25519 key: created once in the storage path, then the same on every start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_identity._fs import atomic_create
from tdx_identity.exceptions import StartupError

KEY_FILE_NAME = "instance_key.pem"


class InstanceKeyError(StartupError):
    """The instance key file exists but cannot be used; it is never silently replaced."""


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InstanceKeyError(f"cannot open instance key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InstanceKeyError(f"instance key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise InstanceKeyError(
                f"instance key file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                "it must not be readable by group or others (chmod 600)"
            )
        if info.st_size > 4096:
            raise InstanceKeyError(f"instance key file {path} is too large to be a key")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _parse_key(path: Path, data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InstanceKeyError(
            f"instance key file {path} is corrupt (not an unencrypted PKCS#8 PEM key); "
            "restore it from a backup or remove it to create a new instance identity"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InstanceKeyError(f"instance key file {path} does not hold an ed25519 key")
    return key


def load_or_create_instance_key(storage_path: Path) -> Ed25519PrivateKey:
    """Load the instance key from `storage_path`, creating it (mode 0600, atomically) if absent."""
    path = storage_path / KEY_FILE_NAME
    if not path.exists() and not path.is_symlink():
        fresh = Ed25519PrivateKey.generate().private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        try:
            atomic_create(path, fresh, mode=0o600)
        except OSError as exc:
            raise InstanceKeyError(
                f"cannot create instance key file {path}: {exc.strerror}"
            ) from exc
    return _parse_key(path, _read_key_file(path))


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the key's public half."""
    return key.public_key().public_bytes_raw()
