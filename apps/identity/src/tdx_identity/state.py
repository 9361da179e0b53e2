"""The persisted state of the instance: one JSON document in the storage path, replaced atomically.

It holds no secret: the owner token is kept only as its SHA-256 hash, and the instance key lives
in its own file (`keys.py`).
"""

from __future__ import annotations

import copy
import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tdx_identity._fs import atomic_replace
from tdx_identity.exceptions import StartupError
from tdx_identity.lifecycle import Lifecycle, has_operator, has_owner
from tdx_identity.registry_client import identity_to_json
from tdx_identity.workload_api import WorkloadConfig
from tdx_report_data import IdentityInfo

STATE_FILE_NAME = "identity_state.json"
FORMAT_VERSION = 1
MAX_STATE_BYTES = 1 << 20


class StateFileError(StartupError):
    """The state file exists but cannot be read back; it is never silently reset."""


class StateWriteError(Exception):
    """The new state could not be written durably; the previous state is still in force."""


@dataclass(frozen=True)
class PersistedState:
    """Everything the service must remember across restarts."""

    lifecycle: Lifecycle = Lifecycle.FRESH
    ppid: bytes | None = None
    operator: IdentityInfo | None = None
    owner: IdentityInfo | None = None
    owner_token_sha256: bytes | None = None
    workload_config: WorkloadConfig | None = None
    workload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_consistent(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "lifecycle": self.lifecycle.value,
            "ppid": self.ppid.hex() if self.ppid is not None else None,
            "operator": identity_to_json(self.operator),
            "owner": identity_to_json(self.owner),
            "owner_token_sha256": (
                self.owner_token_sha256.hex() if self.owner_token_sha256 is not None else None
            ),
            "workload_config": (
                self.workload_config.to_json() if self.workload_config is not None else None
            ),
            "workload": self.workload,
        }

    @classmethod
    def from_json(cls, data: Any) -> PersistedState:
        """Parse `to_json` output; raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {data.get('version')!r}")
        workload = data.get("workload", {})
        if not isinstance(workload, dict):
            raise ValueError("workload section is not an object")
        config = data.get("workload_config")
        lifecycle = data.get("lifecycle")
        if not isinstance(lifecycle, str):
            raise ValueError("lifecycle is not a string")
        return cls(
            lifecycle=Lifecycle(lifecycle),
            ppid=_optional_hex(data, "ppid"),
            operator=_identity(data.get("operator"), "operator"),
            owner=_identity(data.get("owner"), "owner"),
            owner_token_sha256=_optional_hex(data, "owner_token_sha256"),
            workload_config=WorkloadConfig.from_json(config) if config is not None else None,
            workload=workload,
        )


def _optional_hex(data: dict[str, Any], name: str) -> bytes | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a hex string")
    return bytes.fromhex(value)


def _identity(value: Any, name: str) -> IdentityInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    fields = {}
    for key, size in (("pubkey", 32), ("instance_signature", 64), ("identity_signature", 64)):
        raw = _optional_hex(value, key)
        if raw is None or len(raw) != size:
            raise ValueError(f"{name}.{key} is not {size} bytes of hex")
        fields[key] = raw
    return IdentityInfo(**fields)


def _check_consistent(state: PersistedState) -> None:
    """The fields present must be exactly those the lifecycle state implies."""
    lifecycle = state.lifecycle
    if (state.operator is not None) != has_operator(lifecycle):
        raise ValueError(f"operator identity does not match lifecycle state {lifecycle}")
    if (state.owner is not None) != has_owner(lifecycle):
        raise ValueError(f"owner identity does not match lifecycle state {lifecycle}")
    if (state.owner_token_sha256 is not None) != (lifecycle is Lifecycle.OPERATOR_REGISTERED):
        raise ValueError(f"owner token hash does not match lifecycle state {lifecycle}")
    if state.owner_token_sha256 is not None and len(state.owner_token_sha256) != 32:
        raise ValueError("owner token hash is not 32 bytes")
    configured = lifecycle in (Lifecycle.CONFIGURED, Lifecycle.EXPOSED)
    if (state.workload_config is not None) != configured:
        raise ValueError(f"workload config does not match lifecycle state {lifecycle}")
    if has_operator(lifecycle) and state.ppid is None:
        raise ValueError("a registered instance must have a PPID")


class _SectionStore:
    """The `workload` section of a StateStore, for the workload manager."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def load(self) -> dict[str, Any]:
        return copy.deepcopy(self._store.current.workload)

    def save(self, section: dict[str, Any]) -> None:
        self._store.commit(replace(self._store.current, workload=copy.deepcopy(section)))


class StateStore:
    """The current PersistedState and its file; `commit` makes a new state durable, then current."""

    def __init__(self, path: Path, state: PersistedState) -> None:
        self._path = path
        self._state = state

    @classmethod
    def open(cls, storage_path: Path) -> StateStore:
        """Read the state file in `storage_path`, or start FRESH if there is none."""
        path = storage_path / STATE_FILE_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return cls(path, PersistedState())
        except OSError as exc:
            raise StateFileError(f"cannot open state file {path}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_STATE_BYTES:
                raise StateFileError(f"state file {path} is not a regular file of sane size")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                raw = handle.read()
        finally:
            os.close(fd)
        try:
            state = PersistedState.from_json(json.loads(raw))
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise StateFileError(
                f"state file {path} is corrupt ({exc}); restore it from a backup — it is not "
                "reset automatically, because that would forget the registered operator and owner"
            ) from exc
        return cls(path, state)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def current(self) -> PersistedState:
        return self._state

    def commit(self, new: PersistedState) -> None:
        """Write `new` atomically (temp, fsync, rename, fsync dir), then make it current."""
        try:
            data = json.dumps(new.to_json(), indent=2, sort_keys=True).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as exc:
            raise StateWriteError(f"state is not serializable: {exc}") from exc
        try:
            atomic_replace(self._path, data, mode=0o600)
        except OSError as exc:
            raise StateWriteError(f"cannot write state file {self._path}: {exc}") from exc
        self._state = new

    def section_store(self) -> _SectionStore:
        """The handle through which a workload manager persists its own section."""
        return _SectionStore(self)
