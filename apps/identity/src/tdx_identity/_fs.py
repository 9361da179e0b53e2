"""Durable file writes: a reader sees the old content or the new one, never a mix."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, stem: str, data: bytes, mode: int) -> Path:
    """Write `data` to a fresh, fsynced temporary file in `directory` with exactly `mode`."""
    temp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
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
    _fsync_dir(path.parent)


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
    _fsync_dir(path.parent)
    return True


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700 if it does not exist yet."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
