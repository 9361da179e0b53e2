"""The persisted state of the instance: one JSON document in the storage path, replaced atomically.

It holds no secret: the owner token is kept only as its SHA-256 hash, and the instance key lives
in its own file (`instance_key.py`). The workload manager's part (`WorkloadSection`: how far the
last workload step got, and with which configuration) has its schema here too; the manager
reads and writes it only through a `WorkloadSectionStore`.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from tdx_identity.core.lifecycle import (
    Lifecycle,
    WorkloadPhase,
    has_operator,
    has_owner,
    has_workload,
)
from tdx_identity.exceptions import StateFileError, StateWriteError, UnsafeFileError
from tdx_identity.files import DATA_MODE_MASK, atomic_replace, read_private
from tdx_identity.workload.config import WorkloadConfig, validate_image_id
from tdx_identity.workload.requests import MAX_SEQ
from tdx_report_data import IdentityInfo

__all__ = [
    "FORMAT_VERSION",
    "SECTION_VERSION",
    "STATE_FILE_NAME",
    "PersistedState",
    "StateFileError",
    "StateStore",
    "StateWriteError",
    "WorkloadSection",
]

STATE_FILE_NAME: Final = "identity_state.json"
FORMAT_VERSION: Final = 1
SECTION_VERSION: Final = 1
MAX_STATE_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class WorkloadSection:
    """The workload manager's part of the state: the step in progress or done, its config, and
    the image ID configure pinned `config.image` to (None in sections written before pinning).

    On disk it is the state's `workload` object, `{}` when there is none."""

    phase: WorkloadPhase
    config: WorkloadConfig
    image_id: str | None = None

    def __post_init__(self) -> None:
        if self.image_id is not None:
            validate_image_id(self.image_id)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": SECTION_VERSION,
            "phase": self.phase.value,
            "config": self.config.to_json(),
        }
        if self.image_id is not None:
            data["image_id"] = self.image_id
        return data

    @classmethod
    def from_json(cls, data: Any) -> WorkloadSection | None:
        """None for an empty section; raises ValueError for one that is not ours."""
        if not isinstance(data, dict):
            raise ValueError("workload section is not an object")
        if not data:
            return None
        if data.get("version") != SECTION_VERSION:
            raise ValueError(f"unsupported workload section version {data.get('version')!r}")
        config = data.get("config")
        phase = data.get("phase")
        if not isinstance(config, dict) or not isinstance(phase, str):
            raise ValueError("workload section has no phase or no config")
        try:
            return cls(
                phase=WorkloadPhase(phase),
                config=WorkloadConfig.from_json(config),
                image_id=data.get("image_id"),
            )
        except ValueError as exc:
            raise ValueError(f"workload section: {exc}") from None


@dataclass(frozen=True)
class PersistedState:
    """Everything the service must remember across restarts."""

    lifecycle: Lifecycle = Lifecycle.FRESH
    ppid: bytes | None = None
    operator: IdentityInfo | None = None
    owner: IdentityInfo | None = None
    owner_token_sha256: bytes | None = None
    workload_config: WorkloadConfig | None = None
    workload: WorkloadSection | None = None
    # The seq of the last signed owner step committed; 0 before any (and in files written
    # before seqs existed). A step's seq is committed in the same write as the step.
    last_seq: int = 0

    def __post_init__(self) -> None:
        _check_consistent(self)

    def to_json(self) -> dict[str, Any]:
        config = None
        if self.workload_config is not None:
            if self.owner is None:
                raise ValueError("a workload configuration without an owner")
            # The owner key SSH setup access accepts is the registered owner's, kept beside
            # the configuration as the file has always carried it.
            config = self.workload_config.to_json() | {"owner_pubkey": self.owner.pubkey.hex()}
        return {
            "version": FORMAT_VERSION,
            "lifecycle": self.lifecycle.value,
            "ppid": self.ppid.hex() if self.ppid is not None else None,
            "operator": _identity_json(self.operator),
            "owner": _identity_json(self.owner),
            "owner_token_sha256": (
                self.owner_token_sha256.hex() if self.owner_token_sha256 is not None else None
            ),
            "workload_config": config,
            "workload": self.workload.to_json() if self.workload is not None else {},
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_json(cls, data: Any) -> PersistedState:
        """Parse `to_json` output; raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {data.get('version')!r}")
        lifecycle = data.get("lifecycle")
        if not isinstance(lifecycle, str):
            raise ValueError("lifecycle is not a string")
        owner = _identity(data.get("owner"), "owner")
        return cls(
            lifecycle=Lifecycle(lifecycle),
            ppid=_optional_hex(data, "ppid"),
            operator=_identity(data.get("operator"), "operator"),
            owner=owner,
            owner_token_sha256=_optional_hex(data, "owner_token_sha256"),
            workload_config=_workload_config(data.get("workload_config"), owner),
            workload=WorkloadSection.from_json(data.get("workload", {})),
            last_seq=_last_seq(data.get("last_seq", 0)),
        )


def _last_seq(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("last_seq is not an integer")
    return value


def _workload_config(value: Any, owner: IdentityInfo | None) -> WorkloadConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("workload config is not an object")
    owner_hex = value.get("owner_pubkey")
    if not isinstance(owner_hex, str):
        raise ValueError("workload config has no owner_pubkey")
    if owner is None or not hmac.compare_digest(bytes.fromhex(owner_hex), owner.pubkey):
        raise ValueError("workload config's owner_pubkey is not the registered owner's")
    return WorkloadConfig.from_json({k: v for k, v in value.items() if k != "owner_pubkey"})


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
    return IdentityInfo.from_object(value, name=name)


def _identity_json(identity: IdentityInfo | None) -> dict[str, str] | None:
    return identity.to_object() if identity is not None else None


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
    if (state.workload_config is not None) != has_workload(lifecycle):
        raise ValueError(f"workload config does not match lifecycle state {lifecycle}")
    if has_operator(lifecycle) and state.ppid is None:
        raise ValueError("a registered instance must have a PPID")
    if not 0 <= state.last_seq <= MAX_SEQ:
        raise ValueError(f"last_seq is not in 0..{MAX_SEQ}")


class _SectionStore:
    """The `workload` section of a StateStore, for the workload manager."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def load(self) -> WorkloadSection | None:
        return self._store.current.workload

    def save(self, section: WorkloadSection | None) -> None:
        self._store.commit(replace(self._store.current, workload=section))


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
            raw = read_private(path, max_bytes=MAX_STATE_BYTES, mode_mask=DATA_MODE_MASK)
        except FileNotFoundError:
            return cls(path, PersistedState())
        except UnsafeFileError as exc:
            raise StateFileError(f"state file {path} is unusable: {exc}") from exc
        except OSError as exc:
            raise StateFileError(f"cannot open state file {path}: {exc.strerror}") from exc
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
