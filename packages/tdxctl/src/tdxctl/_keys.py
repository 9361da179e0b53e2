"""The operator's and owner's ed25519 key files: created atomically without ever replacing a
file, read without following links, refused when others may read them."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdxctl._errors import KeyFileError

__all__ = [
    "generate_key_file",
    "load_private_key",
    "public_key_bytes",
    "read_private_file",
    "write_private_file",
]

MAX_KEY_FILE_BYTES = 16 * 1024


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of `key`'s public key, as the services take it."""
    return key.public_key().public_bytes_raw()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, mode 0600, atomically and never over an existing file:
    written and fsynced under a temporary name, then hard-linked into place (which fails if
    `path` exists), then the directory fsynced. `KeyFileError` on any failure."""
    directory = path.parent
    temp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create a file in {directory}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path, follow_symlinks=False)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; it is never overwritten") from None
        except OSError as exc:
            raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(directory)


def generate_key_file(path: Path) -> Ed25519PrivateKey:
    """A new ed25519 key written to `path` as PEM PKCS#8 (mode 0600, never overwriting)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem)
    return key


def read_private_file(path: Path, *, what: str = "key file") -> bytes:
    """The bytes of `path`, opened without following a link, a regular file of the caller's
    that no one else may read or write (`what` names it in the errors)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot open the {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"the {what} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"the {what} {path} is accessible by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"the {what} {path} is too large to be a key")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key in `path` (PEM, PKCS#8 or OpenSSH, unencrypted)."""
    data = read_private_file(path)
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"the key file {path} is not an unencrypted PEM private key "
            "(make one with tdxctl keygen)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"the key in {path} is not an ed25519 key")
    return key
