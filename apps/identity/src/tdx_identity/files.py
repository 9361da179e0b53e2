"""The file-safety primitives every key, state and log file of the service goes through.

Writes are atomic (a reader sees the old content or the new one, never a mix) and durable (the
file and its directory are fsynced). Reads refuse symlinks (`O_NOFOLLOW`), anything but a
regular file, a file other users may write (or, for secrets, read), and a file larger than
the caller expects.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Final

from tdx_identity.exceptions import UnsafeFileError

SECRET_MODE_MASK: Final = 0o077
"""Mode bits a secret file must not have: group and others may neither read nor write it."""

DATA_MODE_MASK: Final = 0o022
"""Mode bits a non-secret file must not have: group and others may not write it."""


def fsync_dir(directory: Path) -> None:
    """Make the entries of `directory` (a rename, a new link) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700 if it does not exist yet."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_temp(directory: Path, stem: str, data: bytes, mode: int) -> Path:
    """Write `data` to a fresh, fsynced temporary file in `directory` with exactly `mode`."""
    temp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def atomic_replace(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file, fsync, rename over, fsync the directory."""
    temp = _write_temp(path.parent, path.name, data, mode)
    try:
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_create(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Create `path` with `data` unless it exists; never overwrites. True if this call created it.

    The file appears complete or not at all (hard link of a fsynced temp file), so two
    processes racing to create it end up with one of the two contents, whole.
    """
    temp = _write_temp(path.parent, path.name, data, mode)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def read_private(
    path: Path,
    *,
    max_bytes: int,
    mode_mask: int = SECRET_MODE_MASK,
    owned_by_us: bool = False,
) -> bytes:
    """The content of the regular file `path`, opened without following a symlink.

    Raises FileNotFoundError if it is absent, OSError if it cannot be opened or read, and
    UnsafeFileError if it is not a regular file, has any of `mode_mask`'s bits, is not owned by
    this user (with `owned_by_us`) or holds more than `max_bytes`.
    """
    # O_NONBLOCK: a FIFO planted in the file's place must not block the open until a writer
    # comes (fstat refuses it below); reads of a regular file are not affected.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        if info.st_mode & mode_mask:
            who = "read or written" if mode_mask & 0o044 else "written"
            wanted = 0o666 & ~mode_mask
            raise UnsafeFileError(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; it must not be {who} by "
                f"group or others (mode {wanted:04o}: chmod {wanted:o})"
            )
        if owned_by_us and info.st_uid != os.geteuid():
            raise UnsafeFileError(f"{path} is not owned by this user")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
            size += len(chunk)
            if size > max_bytes:
                raise UnsafeFileError(f"{path} is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
