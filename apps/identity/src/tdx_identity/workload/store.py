"""The encrypted store of the persisted dirs: a gocryptfs tree under STORAGE_PATH.

Only ciphertext is ever written under STORAGE_PATH; the clear view exists only at a mount
point outside it. The key comes from a `KeyProvider` and reaches gocryptfs through a pipe on
its stdin: never on a command line, never in a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from tdx_identity.exceptions import ProgramTimeout, StoreError
from tdx_identity.files import fsync_dir

from ._proc import run_program
from .config import validate_persist_dir
from .store_key import KEY_BYTES

if TYPE_CHECKING:
    from tdx_identity.core.ports import KeyProvider

__all__ = ["EncryptedStore", "GocryptfsStore", "StoreError"]

_CONF_NAME: Final = "gocryptfs.conf"
_FSTYPE: Final = "fuse.gocryptfs"


class EncryptedStore(Protocol):
    """Encrypted storage whose clear view holds one directory per persisted container dir."""

    async def init(self) -> None:
        """Create the encrypted tree if it does not exist yet (idempotent)."""
        ...

    async def mount(self) -> None:
        """Make the clear view available (idempotent)."""
        ...

    async def unmount(self) -> None:
        """Remove the clear view (idempotent)."""
        ...

    def is_mounted(self) -> bool:
        """Whether the clear view is mounted and answering."""
        ...

    def path_for(self, persist_dir: str) -> Path:
        """The host directory in the clear view that backs container dir `persist_dir`."""
        ...

    async def prepare_dirs(self, persist_dirs: Iterable[str]) -> dict[Path, str]:
        """Create the backing dirs; return the bind mounts {host dir: container dir}."""
        ...


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo_entries() -> list[tuple[str, str, str]]:
    """(mount point, fstype, source) of every mount of this process's namespace."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields = left.split(" ")
            tail = right.split(" ")
            if len(fields) < 5 or len(tail) < 2:
                continue
            entries.append((_unescape_mountinfo(fields[4]), tail[0], _unescape_mountinfo(tail[1])))
    return entries


class GocryptfsStore:
    """`EncryptedStore` backed by gocryptfs 2.x, mounted as a FUSE daemon.

    `scrypt_log_n` is the work factor gocryptfs applies to the password. The password is the
    hex of a 256-bit random key, which no amount of guessing reaches, so the minimum (10) is
    used: a larger factor would only slow every mount (about 0.3 s at gocryptfs' default 16).
    `allow_other` lets non-root users of the container reach their files (through their bind
    mounts); the clear root is kept 0700 so that no other host user can walk into it.
    """

    def __init__(
        self,
        *,
        storage_path: Path,
        cipher_dir: Path,
        mount_point: Path,
        key_provider: KeyProvider,
        gocryptfs: str = "gocryptfs",
        scrypt_log_n: int = 10,
        allow_other: bool = True,
        timeout: float = 60.0,
    ) -> None:
        storage = storage_path.resolve()
        cipher = cipher_dir.resolve()
        mount = mount_point.resolve()
        if not _is_within(cipher, storage) or cipher == storage:
            raise StoreError(f"cipher dir {cipher} must be inside STORAGE_PATH {storage}")
        if _is_within(mount, storage) or _is_within(storage, mount):
            raise StoreError(
                f"mount point {mount} must be outside STORAGE_PATH {storage}: "
                "clear data must never be written there"
            )
        if not 10 <= scrypt_log_n <= 28:
            raise StoreError("scrypt_log_n must be in 10..28")
        self._cipher = cipher
        self._mount = mount
        self._keys = key_provider
        self._gocryptfs = gocryptfs
        self._scrypt_log_n = scrypt_log_n
        self._allow_other = allow_other
        self._timeout = timeout
        self._lock = asyncio.Lock()

    @property
    def cipher_dir(self) -> Path:
        return self._cipher

    @property
    def mount_point(self) -> Path:
        return self._mount

    def is_initialized(self) -> bool:
        return (self._cipher / _CONF_NAME).is_file()

    async def _password(self) -> bytes:
        key = await self._keys.get_key()
        if len(key) != KEY_BYTES:
            raise StoreError(f"store key has {len(key)} bytes, expected {KEY_BYTES}")
        # One line of text: gocryptfs reads the password up to the newline; hex keeps all 256 bits.
        return key.hex().encode("ascii") + b"\n"

    async def _gocryptfs_run(
        self, operation: str, args: list[str], password: bytes, *, daemonizes: bool
    ) -> None:
        try:
            done = await run_program(
                [self._gocryptfs, *args],
                time_limit=self._timeout,
                stdin_data=password,
                daemonizes=daemonizes,
            )
        except FileNotFoundError:
            raise StoreError(
                f"{self._gocryptfs!r} is not installed (run the setup script)"
            ) from None
        except ProgramTimeout:
            raise StoreError(f"gocryptfs {operation} timed out") from None
        if done.returncode != 0:
            raise StoreError(
                f"gocryptfs {operation} failed (exit {done.returncode}): {done.error_summary}"
            )

    async def init(self) -> None:
        async with self._lock:
            if self.is_initialized():
                return
            password = await self._password()
            parent = self._cipher.parent
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Initialise aside and rename: a crash never leaves a half-made store in place.
            staging = parent / f".{self._cipher.name}.init-{secrets.token_hex(6)}"
            staging.mkdir(mode=0o700)
            try:
                await self._gocryptfs_run(
                    "init",
                    ["-init", "-q", "-scryptn", str(self._scrypt_log_n), "--", str(staging)],
                    password,
                    daemonizes=False,
                )
                if self._cipher.exists():
                    if any(self._cipher.iterdir()):
                        raise StoreError(
                            f"{self._cipher} exists, is not empty and holds no {_CONF_NAME}"
                        )
                    self._cipher.rmdir()
                staging.rename(self._cipher)
                fsync_dir(parent)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def _mount_entry(self) -> tuple[str, str] | None:
        for point, fstype, source in _mountinfo_entries():
            if point == str(self._mount):
                return fstype, source
        return None

    def is_mounted(self) -> bool:
        entry = self._mount_entry()
        if entry is None or entry[0] != _FSTYPE:
            return False
        try:
            os.statvfs(self._mount)
        except OSError:
            return False
        return True

    async def mount(self) -> None:
        async with self._lock:
            if self.is_mounted():
                return
            if not self.is_initialized():
                raise StoreError(f"no encrypted store at {self._cipher}: initialise it first")
            entry = self._mount_entry()
            if entry is not None:
                if entry[0] != _FSTYPE:
                    raise StoreError(f"{self._mount} is already a {entry[0]} mount point")
                # A gocryptfs mount whose daemon died answers ENOTCONN: detach it, remount.
                await self._fusermount(lazy=True)
            self._mount.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._mount.mkdir(mode=0o700, exist_ok=True)
            if any(self._mount.iterdir()):
                raise StoreError(f"mount point {self._mount} is not empty")
            args = ["-q"]
            if self._allow_other:
                args.append("-allow_other")
            args += ["--", str(self._cipher), str(self._mount)]
            password = await self._password()
            await self._gocryptfs_run("mount", args, password, daemonizes=True)
            if not self.is_mounted():
                raise StoreError(f"gocryptfs reported success but {self._mount} is not mounted")
            # With allow_other the kernel checks modes: the clear root stays private to us.
            if self._mount.stat().st_mode & 0o077:
                self._mount.chmod(0o700)

    async def unmount(self) -> None:
        async with self._lock:
            if self._mount_entry() is None:
                return
            await self._fusermount(lazy=False)

    async def _fusermount(self, *, lazy: bool) -> None:
        flags = ["-u", "-z"] if lazy else ["-u"]
        errors = []
        for program in ("fusermount3", "fusermount"):
            try:
                done = await run_program(
                    [program, *flags, "--", str(self._mount)], time_limit=self._timeout
                )
            except FileNotFoundError:
                errors.append(f"{program} not installed")
                continue
            except ProgramTimeout:
                raise StoreError(f"{program} timed out unmounting {self._mount}") from None
            if done.returncode == 0:
                return
            raise StoreError(f"cannot unmount {self._mount}: {done.error_summary}")
        raise StoreError(f"cannot unmount {self._mount}: {'; '.join(errors)}")

    def path_for(self, persist_dir: str) -> Path:
        validate_persist_dir(persist_dir)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", persist_dir.strip("/"))[:48]
        digest = hashlib.sha256(persist_dir.encode()).hexdigest()[:32]
        return self._mount / f"{slug}-{digest}"

    async def prepare_dirs(self, persist_dirs: Iterable[str]) -> dict[Path, str]:
        if not self.is_mounted():
            raise StoreError(f"encrypted store is not mounted at {self._mount}")
        mounts: dict[Path, str] = {}
        for persist_dir in persist_dirs:
            host_dir = self.path_for(persist_dir)
            try:
                host_dir.mkdir(mode=0o755, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {host_dir}: {exc.strerror}") from None
            mounts[host_dir] = persist_dir
        return mounts
