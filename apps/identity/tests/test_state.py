"""The persisted state document: round trip, invariants, atomic commits, corrupt files."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_identity.core.lifecycle import Lifecycle, WorkloadPhase
from tdx_identity.core.state import (
    STATE_FILE_NAME,
    PersistedState,
    StateFileError,
    StateStore,
    StateWriteError,
    WorkloadSection,
)
from tdx_identity.workload.config import WorkloadConfig
from tdx_report_data import IdentityInfo

OPERATOR = IdentityInfo(b"\x01" * 32, b"\x02" * 64, b"\x03" * 64)
OWNER = IdentityInfo(b"\x04" * 32, b"\x05" * 64, b"\x06" * 64)
CONFIG = WorkloadConfig("localhost/app:1", ("/data",), 8080)
SECTION = WorkloadSection(WorkloadPhase.CONFIGURED, CONFIG)


def full_state(lifecycle: Lifecycle) -> PersistedState:
    order = list(Lifecycle)
    reached = order.index(lifecycle)
    return PersistedState(
        lifecycle=lifecycle,
        ppid=b"\x09" * 16,
        operator=OPERATOR if reached >= 1 else None,
        owner=OWNER if reached >= 2 else None,
        owner_token_sha256=b"\x07" * 32 if lifecycle is Lifecycle.OPERATOR_REGISTERED else None,
        workload_config=CONFIG if reached >= 3 else None,
        workload=SECTION if reached >= 3 else None,
    )


@pytest.mark.parametrize("lifecycle", list(Lifecycle))
def test_every_lifecycle_state_round_trips_through_the_file(
    tmp_path: Path, lifecycle: Lifecycle
) -> None:
    store = StateStore.open(tmp_path)
    assert store.current == PersistedState()
    store.commit(full_state(lifecycle))
    assert StateStore.open(tmp_path).current == full_state(lifecycle)
    assert stat.S_IMODE((tmp_path / STATE_FILE_NAME).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "changes",
    [
        {"lifecycle": Lifecycle.FRESH},
        {"operator": None},
        {"owner_token_sha256": b"\x00" * 32},
        {"workload_config": None},
        {"ppid": None},
    ],
)
def test_states_that_contradict_their_lifecycle_cannot_be_built(changes: dict[str, object]) -> None:
    base = full_state(Lifecycle.CONFIGURED).__dict__ | changes
    with pytest.raises(ValueError):
        PersistedState(**base)


def test_corrupt_state_file_is_a_startup_error_and_is_left_as_is(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    for content in (b"{", b"[]", b'{"version": 99}', b'{"version": 1, "lifecycle": "nope"}'):
        path.write_bytes(content)
        with pytest.raises(StateFileError, match="corrupt"):
            StateStore.open(tmp_path)
        assert path.read_bytes() == content


def test_a_failed_commit_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore.open(tmp_path)
    store.commit(PersistedState(ppid=b"\x01" * 16))
    before = (tmp_path / STATE_FILE_NAME).read_bytes()

    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StateWriteError, match="No space"):
        store.commit(PersistedState(ppid=b"\x02" * 16))
    monkeypatch.undo()
    assert store.current.ppid == b"\x01" * 16
    assert (tmp_path / STATE_FILE_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE_NAME]


def test_workload_section_store_persists_only_its_section(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.commit(full_state(Lifecycle.OWNER_REGISTERED))
    section = store.section_store()
    assert section.load() is None
    unfinished = WorkloadSection(WorkloadPhase.CONFIGURING, CONFIG)
    section.save(unfinished)
    reread = StateStore.open(tmp_path).current
    assert reread.workload == unfinished
    assert reread.owner == OWNER
    assert reread.lifecycle is Lifecycle.OWNER_REGISTERED
    section.save(None)
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["workload"] == {}


def test_the_owner_token_is_never_in_the_file(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.commit(full_state(Lifecycle.OPERATOR_REGISTERED))
    data = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert set(data) == {
        "version",
        "lifecycle",
        "ppid",
        "operator",
        "owner",
        "owner_token_sha256",
        "workload_config",
        "workload",
        "last_seq",
    }


def test_the_file_keeps_its_format_with_a_typed_workload_section(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.commit(full_state(Lifecycle.CONFIGURED))
    data = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert data["workload_config"] == {
        "image": "localhost/app:1",
        "persist_dirs": ["/data"],
        "port": 8080,
        "owner_pubkey": OWNER.pubkey.hex(),
    }
    assert data["workload"] == {
        "version": 1,
        "phase": "configured",
        "config": {"image": "localhost/app:1", "persist_dirs": ["/data"], "port": 8080},
    }


def test_a_workload_config_of_another_owner_or_an_unknown_section_is_corrupt(
    tmp_path: Path,
) -> None:
    store = StateStore.open(tmp_path)
    store.commit(full_state(Lifecycle.CONFIGURED))
    path = tmp_path / STATE_FILE_NAME
    good = json.loads(path.read_text())
    for bad in (
        good | {"workload_config": good["workload_config"] | {"owner_pubkey": "00" * 32}},
        good | {"workload": {"version": 2}},
        good
        | {"workload": {"version": 1, "phase": "paused", "config": good["workload"]["config"]}},
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(StateFileError, match="corrupt"):
            StateStore.open(tmp_path)


def test_a_state_file_others_may_write_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path).commit(PersistedState(ppid=b"\x01" * 16))
    (tmp_path / STATE_FILE_NAME).chmod(0o666)
    with pytest.raises(StateFileError, match="must not be written by group or others"):
        StateStore.open(tmp_path)


@given(
    ppid=st.binary(min_size=1, max_size=384),
    phase=st.sampled_from(list(WorkloadPhase)) | st.none(),
    port=st.integers(min_value=1, max_value=65535),
)
def test_state_json_round_trips(ppid: bytes, phase: WorkloadPhase | None, port: int) -> None:
    section = None if phase is None else WorkloadSection(phase, WorkloadConfig("app:1", (), port))
    state = PersistedState(ppid=ppid, workload=section)
    assert PersistedState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_a_file_written_before_seqs_existed_reads_as_last_seq_0(tmp_path: Path) -> None:
    StateStore.open(tmp_path).commit(full_state(Lifecycle.CONFIGURED))
    path = tmp_path / STATE_FILE_NAME
    old = json.loads(path.read_text())
    del old["last_seq"]
    path.write_text(json.dumps(old))
    assert StateStore.open(tmp_path).current == full_state(Lifecycle.CONFIGURED)
    assert StateStore.open(tmp_path).current.last_seq == 0


def test_last_seq_round_trips_and_a_bad_one_is_corrupt(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.commit(PersistedState(ppid=b"\x01" * 16, last_seq=2**53 - 1))
    assert StateStore.open(tmp_path).current.last_seq == 2**53 - 1
    path = tmp_path / STATE_FILE_NAME
    good = json.loads(path.read_text())
    for bad in (-1, 2**53, True, 1.5, "1", None):
        path.write_text(json.dumps(good | {"last_seq": bad}))
        with pytest.raises(StateFileError, match="corrupt"):
            StateStore.open(tmp_path)
