"""The identity service's runtime measurement log: which helper programs it runs, the SSH host
key it made in memory, the operator and owner it serves, and which workload it configures and
exposes, recorded in an event log and extended into RTMR3.

The register is an `RtmrDevice` (`platform`: the kernel's sysfs file or the tdx-sim); the helper
programs are the workload manager's (`WorkloadManager.helper_programs`).

The order guarantee. Every event is appended to the log, the log is written to
``<storage>/eventlog.json`` durably (temp file, fsync, rename, fsync directory, mode 0600), and
only then extended into RTMR3. A crash can therefore leave at most events recorded but not
extended, never an extension the log does not explain; on the next start
``EventLog.pending(rtmr3)`` names those events and they are extended then.

Reboots. RTMR3 is zero only after the TD starts, and on real TDX it can never be reset or set
to a value, only extended. So on a start with RTMR3 zero the service starts a new log with a
fresh boot event (the previous file is kept as ``eventlog.previous-<n>.json``, the newest
``PREVIOUS_LOGS_KEPT`` of them) and measures its helpers again; the old log no longer matches
any quote, and the registry keeps it with the old record as history. On a start with RTMR3
nonzero (the service restarted within the same boot) the persisted log is continued. If it cannot
explain the register (no log, an unreadable log, or no prefix of it replays to RTMR3) the service
refuses to start with `MeasurementStateError`: replaying a log into a fresh register is never
honest, and a register the log cannot explain can only be cleared by rebooting the TD.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from tdx_identity.core.ports import RtmrDevice
from tdx_identity.exceptions import (
    HelperMeasurementError,
    MeasurementPersistError,
    MeasurementStateError,
    RtmrDeviceError,
    UnsafeFileError,
)
from tdx_identity.files import (
    DATA_MODE_MASK,
    atomic_replace,
    ensure_private_dir,
    fsync_dir,
    read_private,
)
from tdx_measure import (
    REGISTER_SIZE,
    ZERO_REGISTER,
    BootEvent,
    Event,
    EventLog,
    EventLogError,
    ExecutableError,
    ExecutableEvent,
    ReplayMismatchError,
    RuntimeEvent,
    Transition,
    WorkloadEvent,
    event_digest,
    extend,
    measure_executable,
)

__all__ = ["EVENTLOG_FILE", "PREVIOUS_LOGS_KEPT", "HelperPrograms", "MeasurementLog"]

EVENTLOG_FILE: Final = "eventlog.json"
PREVIOUS_LOGS_KEPT: Final = 16
_PREVIOUS_NAME: Final = re.compile(r"eventlog\.previous-([1-9][0-9]{0,9})\.json")
_MAX_LOG_FILE_BYTES: Final = 8 * 1024 * 1024

HelperPrograms = Callable[[], Mapping[str, Path]]
"""Returns the helper programs to measure, by role (`WorkloadManager.helper_programs`)."""


def measure_programs(programs: Mapping[str, Path]) -> tuple[ExecutableEvent, ...]:
    """Measure every program, in the mapping's order. Blocking (reads every file)."""
    events: list[ExecutableEvent] = []
    for role, path in programs.items():
        try:
            events.append(measure_executable(path, role))
        except ExecutableError as exc:
            raise HelperMeasurementError(role, exc.reason) from exc
    return tuple(events)


def _read_log_file(path: Path) -> bytes | None:
    """The persisted log's bytes, or None when there is none."""
    try:
        return read_private(path, max_bytes=_MAX_LOG_FILE_BYTES, mode_mask=DATA_MODE_MASK)
    except FileNotFoundError:
        return None
    except UnsafeFileError as exc:
        raise OSError(str(exc)) from exc


def _previous_numbers(directory: Path) -> list[int]:
    numbers = []
    for entry in directory.iterdir():
        match = _PREVIOUS_NAME.fullmatch(entry.name)
        if match is not None:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def _archive_log_file(directory: Path, kept: int) -> None:
    """Move the current log file aside as the newest ``eventlog.previous-<n>.json`` and delete
    all but the newest `kept` of those."""
    current = directory / EVENTLOG_FILE
    if not current.exists():
        return
    numbers = _previous_numbers(directory)
    newest = (numbers[-1] if numbers else 0) + 1
    current.rename(directory / f"eventlog.previous-{newest}.json")
    numbers.append(newest)
    for number in numbers[: max(0, len(numbers) - kept)]:
        (directory / f"eventlog.previous-{number}.json").unlink(missing_ok=True)
    fsync_dir(directory)


class MeasurementLog:
    """The service's RTMR3 event log: persisted in the storage directory, each event written
    ahead of its extension into RTMR3 through `device`. One instance per storage directory."""

    def __init__(
        self,
        storage_path: Path,
        device: RtmrDevice,
        *,
        helpers: HelperPrograms,
        previous_logs_kept: int = PREVIOUS_LOGS_KEPT,
    ) -> None:
        if previous_logs_kept < 0:
            raise ValueError("previous_logs_kept must not be negative")
        self._storage = storage_path
        self._file = storage_path / EVENTLOG_FILE
        self._device = device
        self._helpers = helpers
        self._kept = previous_logs_kept
        self._lock = asyncio.Lock()
        self._log: EventLog | None = None
        self._extended: EventLog | None = None
        self._register: bytes | None = None

    @property
    def path(self) -> Path:
        """The persisted log file."""
        return self._file

    @property
    def log(self) -> EventLog:
        """The log as far as it is known to be extended into RTMR3 (a copy)."""
        return EventLog.from_events(self._require_started().events)

    def event_log_json(self) -> str:
        """`EventLog.to_json()` of the log as far as it is extended into RTMR3: what POST
        /register's ``event_log`` and ``GET /instance/eventlog`` carry."""
        return self._require_started().to_json()

    @asynccontextmanager
    async def frozen(self) -> AsyncIterator[str]:
        """Hold off every extension while the caller takes a quote: yields the event log JSON
        that explains RTMR3 for as long as the context is open."""
        async with self._lock:
            await self._sync_locked()
            yield self._require_started().to_json()

    async def start(self, now: int) -> None:
        """Begin a new log after a reboot (RTMR3 zero) or continue the persisted one (RTMR3
        nonzero), then make sure the current helper programs are measured."""
        async with self._lock:
            await asyncio.to_thread(ensure_private_dir, self._storage)
            helpers = await asyncio.to_thread(lambda: measure_programs(self._helpers()))
            register = await self._device.read_rtmr3()
            if len(register) != REGISTER_SIZE:
                raise RtmrDeviceError(f"RTMR3 read as {len(register)} bytes")
            if hmac.compare_digest(register, ZERO_REGISTER):
                await self._start_new_boot_locked(now, helpers)
            else:
                await self._continue_locked(register)
                await self._remeasure_locked(helpers)

    async def record_workload(
        self,
        transition: Transition,
        image: str,
        image_id: str,
        persist_dirs: Iterable[str],
        port: int,
    ) -> None:
        """Record a configure or expose step with its workload configuration and extend RTMR3.
        An invalid field raises `tdx_measure.EventLogError` before anything is written."""
        event = WorkloadEvent(
            transition=transition,
            image=image,
            image_id=image_id,
            persist_dirs=tuple(persist_dirs),
            port=port,
        )
        await self.record(event)

    async def record(self, event: RuntimeEvent) -> None:
        """Record any runtime event (an SSH host key, an identity, a workload step): written
        ahead to the log file, then extended into RTMR3, like every other event."""
        async with self._lock:
            await self._sync_locked()
            await self._record_locked(event)

    async def sync(self) -> None:
        """Extend any event that is persisted but not yet in RTMR3 (after a failed extension)."""
        async with self._lock:
            await self._sync_locked()

    def _require_started(self) -> EventLog:
        if self._extended is None:
            raise RuntimeError("MeasurementLog.start() has not completed")
        return self._extended

    async def _start_new_boot_locked(self, now: int, helpers: tuple[ExecutableEvent, ...]) -> None:
        await asyncio.to_thread(_archive_log_file, self._storage, self._kept)
        self._log = self._extended = None
        self._register = ZERO_REGISTER
        boot = BootEvent.fresh(now)
        await self._commit_locked(EventLog(boot), boot)
        for event in helpers:
            await self._record_locked(event)

    async def _continue_locked(self, register: bytes) -> None:
        try:
            data = await asyncio.to_thread(_read_log_file, self._file)
        except OSError as exc:
            raise MeasurementStateError(
                f"RTMR3 is {register.hex()} but the event log {self._file} cannot be read "
                f"({exc}); reboot the TD to start a new log"
            ) from exc
        if data is None:
            raise MeasurementStateError(
                f"RTMR3 is {register.hex()} but there is no event log at {self._file}: the "
                "register holds measurements this service cannot account for; reboot the TD "
                "to start a new log"
            )
        try:
            log = EventLog.from_json(data)
        except EventLogError as exc:
            raise MeasurementStateError(
                f"the event log {self._file} is malformed ({exc.reason}) while RTMR3 is "
                f"{register.hex()}; reboot the TD to start a new log"
            ) from exc
        pending = self._pending(log, register)
        self._log, self._register = log, register
        self._extended = EventLog.from_events(log.events[: len(log) - len(pending)])
        await self._extend_pending_locked(pending)

    def _pending(self, log: EventLog, register: bytes) -> tuple[Event, ...]:
        try:
            return log.pending(register)
        except ReplayMismatchError as exc:
            raise MeasurementStateError(
                f"RTMR3 is {register.hex()} and no prefix of the event log {self._file} "
                f"replays to it (the log replays to {exc.replayed.hex()}): the register and "
                "the log disagree; reboot the TD to start a new log"
            ) from exc
        except EventLogError as exc:
            raise MeasurementStateError(f"RTMR3 and the event log disagree: {exc.reason}") from exc

    async def _remeasure_locked(self, helpers: tuple[ExecutableEvent, ...]) -> None:
        """After a restart within the same boot, record each helper whose program differs from
        the one the log last recorded for its role (an upgrade since the log was started)."""
        latest: dict[str, ExecutableEvent] = {}
        for event in self._require_started().events:
            if isinstance(event, ExecutableEvent):
                latest[event.role] = event
        for event in helpers:
            if latest.get(event.role) != event:
                await self._record_locked(event)

    async def _sync_locked(self) -> None:
        extended = self._require_started()
        if self._log is None or len(extended) == len(self._log):
            return
        register = await self._device.read_rtmr3()
        if hmac.compare_digest(register, ZERO_REGISTER):
            raise MeasurementStateError(
                "RTMR3 is zero while the service runs: the TD rebooted under it; restart the "
                "service to start a new log"
            )
        pending = self._pending(self._log, register)
        self._extended = EventLog.from_events(self._log.events[: len(self._log) - len(pending)])
        self._register = register
        await self._extend_pending_locked(pending)

    async def _extend_pending_locked(self, pending: tuple[Event, ...]) -> None:
        for event in pending:
            base = self._require_started()
            await self._extend_locked(EventLog.from_events((*base.events, event)), event)

    async def _record_locked(self, event: RuntimeEvent) -> None:
        base = self._require_started()
        candidate = EventLog.from_events(base.events)
        candidate.append(event)
        await self._commit_locked(candidate, event)

    async def _commit_locked(self, candidate: EventLog, event: Event) -> None:
        """Write `candidate` (the log with `event` last) durably, then extend `event`."""
        try:
            await asyncio.to_thread(
                atomic_replace, self._file, candidate.to_json().encode("utf-8"), mode=0o600
            )
        except OSError as exc:
            raise MeasurementPersistError(
                f"cannot write the event log {self._file}: {exc.strerror or exc}"
            ) from exc
        self._log = candidate
        await self._extend_locked(candidate, event)

    async def _extend_locked(self, candidate: EventLog, event: Event) -> None:
        assert self._register is not None
        digest = event_digest(event)
        expected = extend(self._register, digest)
        reported = await self._device.extend_rtmr3(digest)
        if reported is not None and not hmac.compare_digest(reported, expected):
            raise MeasurementStateError(
                f"RTMR3 became {reported.hex()} after extending, expected {expected.hex()}: "
                "another process extends RTMR3; the register and the log now disagree"
            )
        self._register = expected
        self._extended = candidate
