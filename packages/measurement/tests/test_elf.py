"""Executable identity read with pyelftools, checked against binutils' readelf on the real
helper programs of this machine, and the explicit errors for everything that is not an ELF."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_measure import (
    EventLogError,
    ExecutableUnreadableError,
    HelperNotFoundError,
    NotAnElfError,
    find_helper,
    measure_executable,
)
from tdx_measure._elftools import ElfParseFailure, _build_ids

HELPERS = [
    ("podman", "podman"),
    ("runc", "oci-runtime"),
    ("conmon", "conmon"),
    ("gocryptfs", "gocryptfs"),
    ("fusermount3", "fusermount"),
]
READELF = shutil.which("readelf")
SMALL_ELF = Path(shutil.which("conmon") or "/usr/bin/conmon").resolve()


def readelf_build_id(path: Path) -> str | None:
    assert READELF is not None, "binutils' readelf is the reference and must be installed"
    out = subprocess.run(
        [READELF, "-n", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    ids = re.findall(r"Build ID: ([0-9a-f]+)", out)
    assert len(set(ids)) <= 1
    return ids[0] if ids else None


def readelf_machine(path: Path) -> str:
    assert READELF is not None
    out = subprocess.run(
        [READELF, "-h", str(path)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Machine:\s+(.+)", out)
    assert match is not None
    return match.group(1).strip()


@pytest.mark.parametrize(("program", "role"), HELPERS)
def test_real_helpers_match_readelf_and_hashlib(program: str, role: str) -> None:
    which = shutil.which(program)
    assert which is not None, f"{program} must be installed on this machine"
    path = find_helper(program)
    assert path == Path(which).resolve()
    event = measure_executable(path, role)
    assert event.role == role
    assert event.path == str(path)
    assert event.machine == "EM_X86_64"
    assert readelf_machine(path) == "Advanced Micro Devices X86-64"
    reference = readelf_build_id(path)
    assert reference is not None
    assert event.build_id is not None
    assert event.build_id.hex() == reference
    assert event.sha384 == hashlib.sha384(path.read_bytes()).digest()


@pytest.fixture
def elf_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "helper"
    shutil.copyfile(SMALL_ELF, copy)
    return copy


def test_symlinks_resolve_to_the_real_path(tmp_path: Path) -> None:
    link = tmp_path / "conmon-link"
    link.symlink_to(SMALL_ELF)
    event = measure_executable(link, "conmon")
    assert event.path == str(SMALL_ELF)
    assert event == measure_executable(SMALL_ELF, "conmon")


def test_build_id_is_read_from_program_headers_when_sections_are_stripped(elf_copy: Path) -> None:
    data = bytearray(elf_copy.read_bytes())
    assert data[4] == 2 and data[5] == 1, "the reference binary is ELF64 little-endian"
    data[0x28:0x30] = bytes(8)  # e_shoff
    data[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx
    elf_copy.write_bytes(bytes(data))
    reference = readelf_build_id(elf_copy)
    assert reference is not None and reference == readelf_build_id(SMALL_ELF)
    event = measure_executable(elf_copy, "conmon")
    assert event.build_id is not None and event.build_id.hex() == reference
    assert event.machine == "EM_X86_64"


def test_an_elf_without_build_id_note_has_none(tmp_path: Path) -> None:
    objcopy = shutil.which("objcopy")
    assert objcopy is not None
    stripped = tmp_path / "no-build-id"
    subprocess.run(
        [objcopy, "--remove-section", ".note.gnu.build-id", str(SMALL_ELF), str(stripped)],
        check=True,
    )
    assert readelf_build_id(stripped) is None
    event = measure_executable(stripped, "conmon")
    assert event.build_id is None
    assert event.sha384 == hashlib.sha384(stripped.read_bytes()).digest()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'#!/bin/sh\nexec podman "$@"\n', "no ELF magic"),
        (b"just some text\n", "no ELF magic"),
        (b"", "no ELF magic"),
        (b"\x7fEL", "no ELF magic"),
        (b"\x7fELF", "malformed ELF"),
        (b"\x7fELF\x02\x01\x01" + bytes(9), "malformed ELF"),
    ],
)
def test_non_elf_files_raise_not_an_elf_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    path.chmod(0o755)
    with pytest.raises(NotAnElfError, match=reason) as info:
        measure_executable(path, "podman")
    assert info.value.path == path.resolve()


def test_relocatable_elf_is_not_an_executable(elf_copy: Path) -> None:
    data = bytearray(elf_copy.read_bytes())
    data[0x10:0x12] = (1).to_bytes(2, "little")  # e_type = ET_REL
    elf_copy.write_bytes(bytes(data))
    with pytest.raises(NotAnElfError, match="ET_REL"):
        measure_executable(elf_copy, "conmon")


def test_truncated_elf_raises_not_an_elf_error(elf_copy: Path) -> None:
    elf_copy.write_bytes(SMALL_ELF.read_bytes()[:4096])
    with pytest.raises(NotAnElfError):
        measure_executable(elf_copy, "conmon")


def test_directory_raises_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ExecutableUnreadableError, match="not a regular file"):
        measure_executable(tmp_path, "podman")


def test_missing_and_dangling_paths_raise_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ExecutableUnreadableError, match="cannot resolve"):
        measure_executable(tmp_path / "absent", "podman")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "absent")
    with pytest.raises(ExecutableUnreadableError, match="cannot resolve"):
        measure_executable(dangling, "podman")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ExecutableUnreadableError, match="cannot resolve"):
        measure_executable(loop, "podman")


def test_fifo_raises_unreadable_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ExecutableUnreadableError, match="not a regular file"):
        measure_executable(fifo, "podman")


def test_read_error_raises_unreadable() -> None:
    # /proc/self/mem is a regular file whose first page is unmapped: read() fails with EIO.
    with pytest.raises(ExecutableUnreadableError, match="cannot read"):
        measure_executable(Path("/proc/self/mem"), "podman")


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tdx-measure-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@contextmanager
def unprivileged() -> Iterator[None]:
    """Root reads any file: act as `nobody` (effective uid only, restored after) so the
    permission check applies; a non-root run needs no change."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_permission_denied_raises_unreadable(world_traversable_dir: Path) -> None:
    secret = world_traversable_dir / "helper"
    shutil.copyfile(SMALL_ELF, secret)
    secret.chmod(0o000)
    with (
        unprivileged(),
        pytest.raises(ExecutableUnreadableError, match="cannot open: Permission denied"),
    ):
        measure_executable(secret, "podman")


def test_invalid_role_is_refused_before_reading() -> None:
    with pytest.raises(EventLogError, match="role"):
        measure_executable(SMALL_ELF, "Not A Role")


@given(st.data())
def test_mutated_elf_headers_raise_only_not_an_elf_error(data: st.DataObject) -> None:
    original = SMALL_ELF.read_bytes()
    head = bytearray(original[:8192])
    for _ in range(data.draw(st.integers(1, 8))):
        offset = data.draw(st.integers(4, 0x40) | st.integers(4, len(head) - 1))
        head[offset] = data.draw(st.integers(0, 255))
    length = data.draw(st.sampled_from([len(original), 8192, 512, 64]))
    mutated = bytes(head) + original[8192:length] if length > 8192 else bytes(head[:length])
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mutated"
        path.write_bytes(mutated)
        try:
            event = measure_executable(path, "conmon")
        except NotAnElfError:
            return
        assert event.sha384 == hashlib.sha384(mutated).digest()


def test_a_build_id_note_longer_than_an_event_holds_is_not_an_elf() -> None:
    # Found by the property test above in a CI run: one mutated byte of conmon's note header
    # made its build-id note 276 bytes, which measure_executable passed on to ExecutableEvent
    # (EventLogError) instead of refusing the file.
    long_note = {"n_name": "GNU", "n_type": "NT_GNU_BUILD_ID", "n_descdata": b"\x01" * 65}
    with pytest.raises(ElfParseFailure, match="build-id note of 65 bytes"):
        list(_build_ids([long_note]))
    longest = {**long_note, "n_descdata": b"\x01" * 64}
    assert list(_build_ids([longest])) == [b"\x01" * 64]


def test_a_seek_the_kernel_refuses_is_not_an_elf(tmp_path: Path) -> None:
    # Found by the property test above: e_shoff's low byte set to 1 (conmon of Debian 12) made
    # pyelftools seek to an offset the kernel refuses (OSError EINVAL), which was reported as
    # an unreadable file instead of a malformed ELF.
    mutated = bytearray(SMALL_ELF.read_bytes())
    mutated[0x28] = 1  # ELFCLASS64: e_shoff is the 8 bytes at 0x28
    path = tmp_path / "mutated"
    path.write_bytes(bytes(mutated))
    with pytest.raises(NotAnElfError, match="malformed ELF"):
        measure_executable(path, "conmon")


def test_find_helper_resolves_through_the_search_path(tmp_path: Path) -> None:
    (tmp_path / "my-runtime").symlink_to(SMALL_ELF)
    assert find_helper("my-runtime", search_path=str(tmp_path)) == SMALL_ELF


@pytest.mark.parametrize("name", ["", "bin/podman", "/usr/bin/podman", ".", ".."])
def test_find_helper_refuses_paths(name: str) -> None:
    with pytest.raises(HelperNotFoundError, match="bare program name"):
        find_helper(name)


def test_find_helper_raises_when_absent(tmp_path: Path) -> None:
    with pytest.raises(HelperNotFoundError, match="not found"):
        find_helper("podman", search_path=str(tmp_path))
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    with pytest.raises(HelperNotFoundError):
        find_helper("dangling", search_path=str(tmp_path))
