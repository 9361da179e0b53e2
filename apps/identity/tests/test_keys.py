"""The instance key file: created once, 0600, atomic, never silently replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tdx_identity.core.instance_key import (
    KEY_FILE_NAME,
    InstanceKeyError,
    load_or_create_instance_key,
    public_key_bytes,
)


def test_key_is_created_with_mode_0600_and_is_the_same_across_restarts(tmp_path: Path) -> None:
    first = load_or_create_instance_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    second = load_or_create_instance_key(tmp_path)
    assert public_key_bytes(second) == public_key_bytes(first)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]


def test_corrupt_key_file_is_a_startup_error_and_is_left_as_is(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    before = path.read_bytes()
    with pytest.raises(InstanceKeyError, match="corrupt"):
        load_or_create_instance_key(tmp_path)
    assert path.read_bytes() == before


def test_empty_key_file_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.touch(mode=0o600)
    with pytest.raises(InstanceKeyError):
        load_or_create_instance_key(tmp_path)
    assert path.read_bytes() == b""


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_instance_key(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(InstanceKeyError, match="chmod 600"):
        load_or_create_instance_key(tmp_path)


def test_key_file_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    load_or_create_instance_key(tmp_path)
    (tmp_path / KEY_FILE_NAME).rename(target)
    (tmp_path / KEY_FILE_NAME).symlink_to(target)
    with pytest.raises(InstanceKeyError):
        load_or_create_instance_key(tmp_path)
