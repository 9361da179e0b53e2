"""The log's signing key: a C2SP note signer key (`NoteSigner.signer_key()` text) in one file.

Created once if missing: a fresh Ed25519 key, written to a temporary file (mode 0600) in the
same directory, fsynced, linked into place (so two processes starting at once never replace
each other's key: the loser reads the winner's), the directory fsynced. Refused at start
(`LogKeyError`, the command exits 2) when the path is not a regular file, when its group or
others may read or write it, or when its text is not a signer key named by `--log-origin`.
The key text is never logged; only the path and the verifier key are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_merkle import NoteError, NoteSigner

log = logging.getLogger("tdx_registry.log_key")

MAX_KEY_FILE_BYTES: Final = 4096
KEY_FILE_MODE: Final = 0o600


class LogKeyError(Exception):
    """The log key file cannot be used; the registry does not start."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"log key {path}: {reason}")
        self.path = path
        self.reason = reason


def _read(path: Path) -> str | None:
    """The file's text, None if it does not exist; refuses anything but a private regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogKeyError(path, f"cannot open it: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LogKeyError(path, "is not a regular file")
        if info.st_mode & 0o077:
            raise LogKeyError(
                path,
                f"group or others may access it (mode {stat.S_IMODE(info.st_mode):04o}); "
                "it must be 0600 or stricter (chmod 600)",
            )
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise LogKeyError(path, f"cannot read it: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise LogKeyError(path, "is too large to be a note signer key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise LogKeyError(path, "is not a note signer key (not ASCII text)") from None


def _parse(path: Path, text: str, origin: str) -> NoteSigner:
    line = text[:-1] if text.endswith("\n") else text
    try:
        signer = NoteSigner.from_signer_key(line)
    except (NoteError, ValueError) as exc:
        raise LogKeyError(path, f"is not a note signer key: {exc}") from None
    if signer.name != origin:
        raise LogKeyError(
            path,
            f"names the key {signer.name!r}, but the log origin (--log-origin) is {origin!r}",
        )
    return signer


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path, origin: str) -> None:
    """Write a fresh signer key to `path` unless a file appeared there meanwhile."""
    text = NoteSigner(origin, Ed25519PrivateKey.generate()).signer_key() + "\n"
    # A random name: one left by a start killed before the link (same pid: pid 1 in a
    # container) must not stop the next start.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, KEY_FILE_MODE
        )
        try:
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        temp.unlink()
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise LogKeyError(path, f"cannot create it: {exc.strerror}") from None


def load_or_create_log_key(path: Path, origin: str) -> NoteSigner:
    """The signer stored at `path` (created first if missing); `LogKeyError` if unusable."""
    text = _read(path)
    if text is None:
        _create(path, origin)
        text = _read(path)
        if text is None:
            raise LogKeyError(path, "vanished right after it was created")
        signer = _parse(path, text, origin)
        log.info(
            "log key created",
            extra={"path": str(path), "verifier_key": signer.verifier_key()},
        )
        return signer
    return _parse(path, text, origin)
