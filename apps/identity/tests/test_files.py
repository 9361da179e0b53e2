"""The file-safety primitives every key, state and log file goes through."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from tdx_identity.exceptions import UnsafeFileError
from tdx_identity.files import (
    DATA_MODE_MASK,
    atomic_create,
    atomic_replace,
    read_private,
)


def test_atomic_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert atomic_create(path, b"one", mode=0o600)
    assert not atomic_create(path, b"two", mode=0o600)
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_replace_sets_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    path.chmod(0o644)
    atomic_replace(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_read_private_returns_the_content_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_create(path, b"x" * 32)
    assert read_private(path, max_bytes=32) == b"x" * 32
    with pytest.raises(UnsafeFileError, match="larger than 31 bytes"):
        read_private(path, max_bytes=31)


def test_read_private_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    atomic_create(target, b"secret")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError) as raised:
        read_private(tmp_path / "link", max_bytes=64)
    assert not isinstance(raised.value, FileNotFoundError)


def test_read_private_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_private(tmp_path, max_bytes=64)


def test_read_private_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """A named pipe planted where a file is expected (STORAGE_PATH is the host's disk) is
    refused at once: opening it for reading must not block the service until a writer comes."""
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_private(fifo, max_bytes=100))
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5.0)
    if reader.is_alive():  # blocked in open(2): a writer end lets it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5.0)
        pytest.fail("read_private blocked on a FIFO until a writer opened it")
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafeFileError), outcome
    assert "not a regular file" in str(outcome[0])


def test_read_private_says_when_the_file_is_absent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "absent", max_bytes=64)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660])
def test_a_secret_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    atomic_create(path, b"k")
    path.chmod(mode)
    with pytest.raises(UnsafeFileError, match="chmod 600"):
        read_private(path, max_bytes=64)


def test_data_others_may_read_but_not_write(tmp_path: Path) -> None:
    path = tmp_path / "state"
    atomic_create(path, b"{}", mode=0o644)
    assert read_private(path, max_bytes=64, mode_mask=DATA_MODE_MASK) == b"{}"
    path.chmod(0o664)
    with pytest.raises(UnsafeFileError, match="must not be written by group or others"):
        read_private(path, max_bytes=64, mode_mask=DATA_MODE_MASK)


def test_a_file_of_another_user_is_refused_when_ours_is_required(tmp_path: Path) -> None:
    path = tmp_path / "key"
    atomic_create(path, b"k")
    other = os.geteuid() + 1
    try:
        os.chown(path, other, -1)
    except PermissionError:
        pytest.fail("the test needs to chown a file (run as root, as the suite does)")
    with pytest.raises(UnsafeFileError, match="not owned by this user"):
        read_private(path, max_bytes=64, owned_by_us=True)
    assert read_private(path, max_bytes=64) == b"k"
