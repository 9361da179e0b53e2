"""Executable identity: which program file a role resolves to, its SHA-384, ELF machine type and
GNU build ID. Every failure is an explicit error; nothing is silently skipped."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from tdx_measure._elftools import ElfParseFailure, read_elf_identity
from tdx_measure._errors import ExecutableUnreadableError, HelperNotFoundError, NotAnElfError
from tdx_measure._events import ExecutableEvent, validate_role

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def measure_executable(path: Path, role: str) -> ExecutableEvent:
    """Measure the program at `path` (symlinks resolved) for `role`. The hash and the ELF
    fields are read from one open file descriptor, so they describe the same file.

    Raises `ExecutableUnreadableError` (missing, not a regular file, unreadable) or
    `NotAnElfError` (readable but not an ELF executable or shared object)."""
    validate_role(role)
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (Python < 3.13)
        raise ExecutableUnreadableError(path, f"cannot resolve: {_os_reason(exc)}") from None
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        raise ExecutableUnreadableError(real, f"cannot open: {_os_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ExecutableUnreadableError(real, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            digest = hashlib.file_digest(stream, "sha384").digest()
            identity = read_elf_identity(stream)
    except OSError as exc:
        raise ExecutableUnreadableError(real, f"cannot read: {_os_reason(exc)}") from None
    except ElfParseFailure as exc:
        raise NotAnElfError(real, str(exc)) from None
    finally:
        os.close(fd)
    return ExecutableEvent(
        role=role,
        path=str(real),
        sha384=digest,
        build_id=identity.build_id,
        machine=identity.machine,
    )


def find_helper(name: str, *, search_path: str | None = None) -> Path:
    """The real path of the program `name` as `PATH` lookup finds it (`search_path` overrides
    the process's PATH). Raises `HelperNotFoundError` if it is absent."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise HelperNotFoundError(name, "must be a bare program name, not a path")
    found = shutil.which(name, path=search_path)
    if found is None:
        raise HelperNotFoundError(name, "not found on the search path")
    try:
        return Path(found).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise HelperNotFoundError(name, f"{found} cannot be resolved: {_os_reason(exc)}") from None
