"""The service's RTMR3 measurement log: fresh boots, restarts within a boot, crashes between
extending and writing, events forged into the file, reboots, a register the log cannot explain,
workload events, and the register devices (the real simulator over HTTP, the sysfs file, an
in-memory register)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tdx_identity.core import measurement
from tdx_identity.core.measurement import EVENTLOG_FILE, PREVIOUS_LOGS_KEPT, MeasurementLog
from tdx_identity.core.ports import RtmrDevice
from tdx_identity.exceptions import (
    HelperMeasurementError,
    MeasurementPersistError,
    MeasurementStateError,
    RtmrDeviceError,
)
from tdx_identity.platform import SimRtmrDevice, SysfsRtmrDevice
from tdx_identity.workload.helpers import HELPER_ROLES, HelperSpec, resolve_helper, resolve_helpers
from tdx_measure import (
    ZERO_REGISTER,
    BootEvent,
    EventLog,
    ExecutableEvent,
    WorkloadEvent,
    event_digest,
    extend,
)
from tdx_service_kit.testing import serve
from tdx_sim.app import SimSettings, create_app

NOW = 1_700_000_000
IMAGE_ID = "sha256:" + "ab" * 32
EXPECTED_ROLES = ("podman", "oci-runtime", "conmon", "gocryptfs", "fusermount", "nginx")


def log_of(
    storage: Path,
    device: RtmrDevice,
    *,
    helpers: Mapping[str, HelperSpec] = HELPER_ROLES,
    search_path: str | None = None,
    previous_logs_kept: int = PREVIOUS_LOGS_KEPT,
) -> MeasurementLog:
    """The log measuring every helper role, found on `search_path`, as the podman manager has it."""
    return MeasurementLog(
        storage,
        device,
        helpers=lambda: resolve_helpers(helpers, search_path=search_path),
        previous_logs_kept=previous_logs_kept,
    )


def machine_helpers() -> dict[str, str]:
    """This machine's helper programs, found independently of the module under test."""
    conmon = shutil.which("conmon") or "/usr/libexec/podman/conmon"
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    found = {
        "podman": shutil.which("podman"),
        "oci-runtime": shutil.which("runc"),
        "conmon": conmon,
        "gocryptfs": shutil.which("gocryptfs"),
        "fusermount": fusermount,
        "nginx": shutil.which("nginx") or "/usr/sbin/nginx",
    }
    assert all(found.values()), f"a helper is missing on this machine: {found}"
    return {role: os.path.realpath(str(path)) for role, path in found.items()}


class MemoryRtmr:
    """An in-memory RTMR3 with the TDX extension rule; records every extended digest."""

    def __init__(self, value: bytes = ZERO_REGISTER) -> None:
        self.value = value
        self.extended: list[bytes] = []
        self.before_extend: Callable[[bytes], None] | None = None
        self.report: Callable[[bytes], bytes | None] = lambda value: value

    async def read_rtmr3(self) -> bytes:
        return self.value

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        if self.before_extend is not None:
            self.before_extend(digest)
        self.value = extend(self.value, digest)
        self.extended.append(digest)
        return self.report(self.value)


class Crash(Exception):
    """The process died between extending the register and writing the log."""


class CountingDevice:
    """Forwards to a device and counts the extends."""

    def __init__(self, inner: SimRtmrDevice) -> None:
        self.inner = inner
        self.extends = 0

    async def read_rtmr3(self) -> bytes:
        return await self.inner.read_rtmr3()

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        self.extends += 1
        return await self.inner.extend_rtmr3(digest)


RunSim = Callable[[], AbstractAsyncContextManager[SimRtmrDevice]]


@pytest.fixture
def run_sim(tmp_path: Path) -> RunSim:
    """Each use serves a new tdx-sim app over the same state directory: a new boot of the
    simulated TD (RTMR3 zero), as a restart of the simulator process is."""

    @asynccontextmanager
    async def running() -> AsyncIterator[SimRtmrDevice]:
        app = create_app(SimSettings(state_dir=tmp_path / "sim-state"))
        async with serve(app) as base_url:
            yield SimRtmrDevice(base_url)

    return running


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def sha384_of(path: str) -> bytes:
    return hashlib.sha384(Path(path).read_bytes()).digest()


def previous_logs(storage: Path) -> list[str]:
    return sorted(p.name for p in storage.glob("eventlog.previous-*.json"))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def persisted(storage: Path) -> EventLog:
    return EventLog.from_json((storage / EVENTLOG_FILE).read_bytes())


async def test_fresh_start_measures_the_machines_helpers_and_rtmr3_equals_the_replay(
    run_sim: RunSim, storage: Path
) -> None:
    async with run_sim() as sim:
        mlog = log_of(storage, sim)
        await mlog.start(NOW)
        register = await sim.read_rtmr3()
    log = EventLog.from_json(mlog.event_log_json())
    assert isinstance(log.events[0], BootEvent)
    assert log.events[0].timestamp == NOW
    executables = [e for e in log.events[1:] if isinstance(e, ExecutableEvent)]
    assert len(executables) == len(log) - 1 == 6
    assert tuple(e.role for e in executables) == EXPECTED_ROLES
    expected_paths = machine_helpers()
    for event in executables:
        assert event.path == expected_paths[event.role]
        assert event.sha384 == sha384_of(event.path)
    assert register != ZERO_REGISTER
    assert log.replay() == register
    assert persisted(storage) == log


async def test_restart_within_the_same_boot_reloads_the_log_and_extends_nothing(
    run_sim: RunSim, storage: Path
) -> None:
    async with run_sim() as sim:
        first = log_of(storage, sim)
        await first.start(NOW)
        before = await sim.read_rtmr3()
        counting = CountingDevice(sim)
        second = log_of(storage, counting)
        await second.start(NOW + 60)
        after = await sim.read_rtmr3()
    assert counting.extends == 0
    assert after == before
    assert second.event_log_json() == first.event_log_json()
    assert EventLog.from_json(second.event_log_json()).replay() == after


async def test_events_written_into_the_file_while_stopped_are_never_extended(
    run_sim: RunSim, storage: Path
) -> None:
    async with run_sim() as sim:
        first = log_of(storage, sim)
        await first.start(NOW)
        before = await sim.read_rtmr3()
        forged = persisted(storage)
        forged.append(WorkloadEvent("expose", "docker.io/evil:1", IMAGE_ID, (), 8080))
        (storage / EVENTLOG_FILE).write_text(forged.to_json())

        counting = CountingDevice(sim)
        with pytest.raises(MeasurementStateError, match="beyond RTMR3"):
            await log_of(storage, counting).start(NOW)
        after = await sim.read_rtmr3()
    assert counting.extends == 0
    assert after == before


async def test_a_crash_between_extend_and_write_refuses_the_next_start(
    storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)

    def crash(path: Path, data: bytes, *, mode: int = 0o600) -> None:
        raise Crash

    monkeypatch.setattr(measurement, "atomic_replace", crash)
    with pytest.raises(Crash):
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 8080)
    monkeypatch.undo()
    assert persisted(storage).replay() != device.value
    extended_before = len(device.extended)
    with pytest.raises(MeasurementStateError, match="cannot explain"):
        await log_of(storage, device).start(NOW)
    assert len(device.extended) == extended_before


async def test_sim_restart_starts_a_new_boot_log_and_keeps_the_previous_one(
    run_sim: RunSim, storage: Path
) -> None:
    async with run_sim() as sim:
        first = log_of(storage, sim)
        await first.start(NOW)
        await first.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, ["/data"], 80)
        old_json = first.event_log_json()
    async with run_sim() as rebooted:
        assert await rebooted.read_rtmr3() == ZERO_REGISTER
        second = log_of(storage, rebooted)
        await second.start(NOW + 600)
        register = await rebooted.read_rtmr3()
    new_log = EventLog.from_json(second.event_log_json())
    old_log = EventLog.from_json(old_json)
    assert new_log.boot.boot_nonce != old_log.boot.boot_nonce
    assert new_log.boot.timestamp == NOW + 600
    assert new_log.workload is None
    assert new_log.replay() == register
    assert (storage / "eventlog.previous-1.json").read_text() == old_json


async def test_previous_logs_are_bounded_and_the_newest_are_kept(storage: Path) -> None:
    device = MemoryRtmr()
    boots = []
    for boot in range(5):
        device.value = ZERO_REGISTER
        mlog = log_of(storage, device, previous_logs_kept=2)
        await mlog.start(NOW + boot)
        boots.append(mlog.event_log_json())
    kept = previous_logs(storage)
    assert kept == ["eventlog.previous-3.json", "eventlog.previous-4.json"]
    assert (storage / "eventlog.previous-4.json").read_text() == boots[3]
    assert (storage / "eventlog.previous-3.json").read_text() == boots[2]


async def test_a_register_the_log_cannot_explain_is_a_state_error_and_nothing_is_reset(
    storage: Path,
) -> None:
    device = MemoryRtmr()
    await log_of(storage, device).start(NOW)
    original = (storage / EVENTLOG_FILE).read_bytes()
    device.value = extend(device.value, hashlib.sha384(b"someone else").digest())
    extended_before = len(device.extended)
    with pytest.raises(MeasurementStateError, match="cannot explain"):
        await log_of(storage, device).start(NOW)
    assert (storage / EVENTLOG_FILE).read_bytes() == original
    assert len(device.extended) == extended_before
    assert not previous_logs(storage)


async def test_a_nonzero_register_without_a_log_is_a_state_error(storage: Path) -> None:
    device = MemoryRtmr(hashlib.sha384(b"measured by someone").digest())
    with pytest.raises(MeasurementStateError, match="no event log"):
        await log_of(storage, device).start(NOW)
    assert device.extended == []
    assert not (storage / EVENTLOG_FILE).exists()


async def test_a_malformed_log_with_a_nonzero_register_is_a_state_error(storage: Path) -> None:
    device = MemoryRtmr()
    await log_of(storage, device).start(NOW)
    (storage / EVENTLOG_FILE).write_text('{"events": [], "format": "tdx-measure/eventlog/v1"}')
    with pytest.raises(MeasurementStateError, match="malformed"):
        await log_of(storage, device).start(NOW)


async def test_record_workload_appends_and_extends(run_sim: RunSim, storage: Path) -> None:
    async with run_sim() as sim:
        mlog = log_of(storage, sim)
        await mlog.start(NOW)
        before = await sim.read_rtmr3()
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, ["/data"], 8080)
        await mlog.record_workload("expose", "docker.io/nginx:1", IMAGE_ID, ["/data"], 8080)
        register = await sim.read_rtmr3()
    log = EventLog.from_json(mlog.event_log_json())
    configure, expose = log.events[-2:]
    assert configure == WorkloadEvent("configure", "docker.io/nginx:1", IMAGE_ID, ("/data",), 8080)
    assert expose == WorkloadEvent("expose", "docker.io/nginx:1", IMAGE_ID, ("/data",), 8080)
    assert extend(extend(before, event_digest(configure)), event_digest(expose)) == register
    assert log.replay() == register
    assert persisted(storage) == log


async def test_every_event_is_extended_before_it_is_persisted(storage: Path) -> None:
    device = MemoryRtmr()
    seen: list[bool] = []

    def check(digest: bytes) -> None:
        path = storage / EVENTLOG_FILE
        on_disk = persisted(storage).events if path.exists() else ()
        seen.append(all(event_digest(event) != digest for event in on_disk))

    device.before_extend = check
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)
    assert seen == [True] * 8
    assert persisted(storage).replay() == device.value


async def test_the_log_file_is_private_and_replaced_atomically(storage: Path) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    path = storage / EVENTLOG_FILE
    first_inode = path.stat().st_ino
    await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert mode_of(storage) == 0o700
    assert info.st_ino != first_inode  # a new file renamed over the old, never rewritten in place
    assert listing(storage) == [EVENTLOG_FILE]
    assert path.read_text() == mlog.event_log_json()


async def test_a_failed_write_comes_after_the_extension_and_the_next_write_heals_it(
    storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    before_file = (storage / EVENTLOG_FILE).read_text()

    def disk_full(path: Path, data: bytes, *, mode: int = 0o600) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(measurement, "atomic_replace", disk_full)
    with pytest.raises(MeasurementPersistError, match="No space left"):
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)
    assert EventLog.from_json(mlog.event_log_json()).replay() == device.value
    assert (storage / EVENTLOG_FILE).read_text() == before_file
    monkeypatch.undo()
    await mlog.record_workload("expose", "docker.io/nginx:1", IMAGE_ID, [], 80)
    assert persisted(storage).replay() == device.value
    assert (storage / EVENTLOG_FILE).read_text() == mlog.event_log_json()


async def test_a_failed_extend_that_did_not_reach_the_register_is_dropped(storage: Path) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    extended_json = mlog.event_log_json()

    def unreachable(digest: bytes) -> None:
        raise RtmrDeviceError("mock TDX unreachable")

    device.before_extend = unreachable
    with pytest.raises(RtmrDeviceError):
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)
    assert mlog.event_log_json() == extended_json
    device.before_extend = None
    await mlog.record_workload("expose", "docker.io/nginx:1", IMAGE_ID, [], 80)
    log = EventLog.from_json(mlog.event_log_json())
    assert [e.transition for e in log.events if isinstance(e, WorkloadEvent)] == ["expose"]
    assert log.replay() == device.value
    assert persisted(storage) == log


async def test_a_failed_extend_that_reached_the_register_is_kept_from_memory(
    storage: Path,
) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)

    def lost_answer(value: bytes) -> bytes | None:
        raise RtmrDeviceError("the answer was lost")

    device.report = lost_answer
    with pytest.raises(RtmrDeviceError):
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)
    device.report = lambda value: value
    async with mlog.frozen() as log_json:
        log = EventLog.from_json(log_json)
    assert [e.transition for e in log.events if isinstance(e, WorkloadEvent)] == ["configure"]
    assert log.replay() == device.value
    assert persisted(storage) == log


async def test_an_extension_by_another_process_is_a_state_error(storage: Path) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    device.value = extend(device.value, hashlib.sha384(b"intruder").digest())
    with pytest.raises(MeasurementStateError, match="another process"):
        await mlog.record_workload("configure", "docker.io/nginx:1", IMAGE_ID, [], 80)


async def test_frozen_yields_the_log_that_explains_the_register(storage: Path) -> None:
    device = MemoryRtmr()
    mlog = log_of(storage, device)
    await mlog.start(NOW)
    async with mlog.frozen() as log_json:
        assert EventLog.from_json(log_json).replay() == device.value


async def test_a_missing_helper_is_a_named_error_and_nothing_is_extended(
    storage: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    device = MemoryRtmr()
    with pytest.raises(HelperMeasurementError) as caught:
        await log_of(storage, device, search_path=str(empty)).start(NOW)
    assert caught.value.role == "podman"
    assert "not found" in str(caught.value)
    assert device.extended == []
    assert not (storage / EVENTLOG_FILE).exists()


async def test_a_helper_that_is_not_an_elf_is_a_named_error(storage: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "podman"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    with pytest.raises(HelperMeasurementError, match="podman") as caught:
        await log_of(
            storage,
            MemoryRtmr(),
            helpers={"podman": HelperSpec(("podman",))},
            search_path=str(bin_dir),
        ).start(NOW)
    assert caught.value.role == "podman"


async def test_conmon_is_found_through_its_fallback_paths(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    real = tmp_path / "libexec-conmon"
    shutil.copyfile(machine_helpers()["conmon"], real)
    spec = HelperSpec(("conmon",), (tmp_path / "absent", real))
    assert resolve_helper("conmon", spec, search_path=str(empty)) == real


async def test_a_helper_changed_within_the_boot_is_measured_again_on_restart(
    storage: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helpers = machine_helpers()
    names = {"podman": "podman", "oci-runtime": "runc", "conmon": "conmon",
             "gocryptfs": "gocryptfs", "fusermount": "fusermount3"}  # fmt: skip
    for role, name in names.items():
        (bin_dir / name).symlink_to(helpers[role])
    device = MemoryRtmr()
    await log_of(storage, device, search_path=str(bin_dir)).start(NOW)
    (bin_dir / "runc").unlink()
    (bin_dir / "runc").symlink_to(helpers["gocryptfs"])
    restarted = log_of(storage, device, search_path=str(bin_dir))
    await restarted.start(NOW)
    log = EventLog.from_json(restarted.event_log_json())
    assert len(log) == 8
    last = log.events[-1]
    assert isinstance(last, ExecutableEvent)
    assert (last.role, last.path) == ("oci-runtime", helpers["gocryptfs"])
    assert log.replay() == device.value


async def test_sysfs_device_reads_48_bytes_and_writes_the_digest(tmp_path: Path) -> None:
    register_file = tmp_path / "rtmr3:sha384"
    value = hashlib.sha384(b"value").digest()
    register_file.write_bytes(value)
    device = SysfsRtmrDevice(register_file)
    assert await device.read_rtmr3() == value
    digest = hashlib.sha384(b"digest").digest()
    assert await device.extend_rtmr3(digest) is None
    assert register_file.read_bytes() == digest  # a regular file only records the write


async def test_sysfs_device_refuses_a_register_of_the_wrong_size(tmp_path: Path) -> None:
    register_file = tmp_path / "rtmr3:sha384"
    register_file.write_bytes(bytes(47))
    with pytest.raises(RtmrDeviceError, match="47 bytes"):
        await SysfsRtmrDevice(register_file).read_rtmr3()
    with pytest.raises(RtmrDeviceError, match="cannot read"):
        await SysfsRtmrDevice(tmp_path / "absent").read_rtmr3()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, {"error": "boom"}, "HTTP 500"),
        (200, {"index": 2, "value": "00" * 48}, "extended 2"),
        (200, {"index": 3, "value": "00" * 47}, "48 bytes of hex"),
        (200, {"index": 3, "value": "ZZ" * 48}, "48 bytes of hex"),
        (200, [], "no JSON object"),
    ],
)
async def test_sim_device_refuses_bad_answers(status: int, body: object, reason: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode())

    device = SimRtmrDevice("http://sim.test", transport=httpx.MockTransport(answer))
    with pytest.raises(RtmrDeviceError, match=reason):
        await device.extend_rtmr3(bytes(48))


async def test_sim_device_reports_an_unreachable_simulator() -> None:
    with pytest.raises(RtmrDeviceError, match="unreachable"):
        await SimRtmrDevice("http://127.0.0.1:9", timeout=2.0).read_rtmr3()


def test_helper_roles_name_the_six_helpers() -> None:
    assert tuple(HELPER_ROLES) == EXPECTED_ROLES
    assert HELPER_ROLES["nginx"].names == ("nginx",)
    assert HELPER_ROLES["nginx"].fallbacks == (Path("/usr/sbin/nginx"),)
    assert HELPER_ROLES["oci-runtime"].names == ("runc",)
    assert HELPER_ROLES["fusermount"].names == ("fusermount3", "fusermount")
    assert HELPER_ROLES["conmon"].fallbacks == (
        Path("/usr/libexec/podman/conmon"),
        Path("/usr/bin/conmon"),
    )
