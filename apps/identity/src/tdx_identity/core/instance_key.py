"""The instance ed25519 key: created once in the storage path, then the same on every start."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_identity.exceptions import InstanceKeyError, UnsafeFileError
from tdx_identity.files import atomic_create, read_private

__all__ = ["KEY_FILE_NAME", "InstanceKeyError", "load_or_create_instance_key", "public_key_bytes"]

KEY_FILE_NAME = "instance_key.pem"


def _read_key_file(path: Path) -> bytes:
    try:
        return read_private(path, max_bytes=4096)
    except UnsafeFileError as exc:
        raise InstanceKeyError(f"instance key file unusable: {exc}") from exc
    except OSError as exc:
        raise InstanceKeyError(f"cannot open instance key file {path}: {exc.strerror}") from exc


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
