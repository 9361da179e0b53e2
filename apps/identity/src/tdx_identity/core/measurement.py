"""The identity service's runtime measurement log: which helper programs it runs, the SSH host
key it made in memory, the operator and owner it serves, and which workload it configures and
exposes, recorded in an event log and extended into RTMR3.

The register is an `RtmrDevice` (`platform`: the kernel's sysfs file or the tdx-sim); the helper
programs are the workload manager's (`WorkloadManager.helper_programs`).

Measurements only from memory. Every event is extended into RTMR3 first and only then is the
log, as the service holds it in memory, written to ``<storage>/eventlog.json`` durably (temp
file, fsync, rename, fsync directory, mode 0600). Nothing read from that file is ever extended:
the host can write the file while the service is stopped. A crash between an extension and its
write leaves RTMR3 one event ahead of the file; an extension whose device call failed is settled
before the next one from the event still held in memory (kept when the register shows it, else
dropped).

Reboots. RTMR3 is zero only after the TD starts, and on real TDX it can never be reset or set
to a value, only extended. So on a start with RTMR3 zero the service starts a new log with a
fresh boot event (the previous file is kept as ``eventlog.previous-<n>.json``, the newest
``PREVIOUS_LOGS_KEPT`` of them) and measures its helpers again; the old log no longer matches
any quote, and the registry keeps it with the old record as history. On a start with RTMR3
nonzero (the service restarted within the same boot) the persisted log is continued only when it
replays exactly to RTMR3. Anything else (no log, an unreadable log, a log with events beyond
RTMR3, which this service never wrote, or a log that cannot explain RTMR3, such as after a crash
between an extension and its write) makes the start fail with `MeasurementStateError`: the
service serves nothing until the TD reboots, because a register the log cannot explain can only
be cleared by rebooting, and extending events read from disk would let the host forge them.

Size. Every registration carries the whole log, and the registry refuses bodies over its limit
(64 KiB by default), so a log that grew without bound would make every later registration fail.
The one step an owner can repeat at will is configure (about 250 bytes an event): a configure
that would grow the log past `CONFIGURE_LOG_BUDGET_BYTES` is refused before anything is done
(`EventLogFull`, HTTP 409). The rest of the registry's limit is left to the quote (hex) and the
other fields, and to the few events a configure does not bound (expose, identities, and the
settings, SSH host key and TLS key events of each start). Every event stays in the log: each
replay of RTMR3 remains verifiable; a reboot starts a new log.
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
    EventLogFull,
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

__all__ = [
    "CONFIGURE_LOG_BUDGET_BYTES",
    "EVENTLOG_FILE",
    "PREVIOUS_LOGS_KEPT",
    "HelperPrograms",
    "MeasurementLog",
]

EVENTLOG_FILE: Final = "eventlog.json"
PREVIOUS_LOGS_KEPT: Final = 16
_PREVIOUS_NAME: Final = re.compile(r"eventlog\.previous-([1-9][0-9]{0,9})\.json")
_MAX_LOG_FILE_BYTES: Final = 8 * 1024 * 1024
CONFIGURE_LOG_BUDGET_BYTES: Final = 40 * 1024
# The longest podman image ID form: the configure's own ID is known only after the container
# runs, and the room is checked before anything is done.
_LONGEST_IMAGE_ID: Final = "sha256:" + "0" * 64

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
    """The service's RTMR3 event log: held in memory, each event extended into RTMR3 through
    `device` and then persisted in the storage directory. One instance per storage directory."""

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
        self._extended: EventLog | None = None
        self._register: bytes | None = None
        self._uncertain: Event | None = None
        self._broken: str | None = None

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
            await self._settle_locked()
            yield self._require_started().to_json()

    async def start(self, now: int) -> None:
        """Begin a new log after a reboot (RTMR3 zero) or continue the persisted one when it
        replays exactly to RTMR3, then make sure the current helper programs are measured."""
        async with self._lock:
            await asyncio.to_thread(ensure_private_dir, self._storage)
            helpers = await asyncio.to_thread(lambda: measure_programs(self._helpers()))
            register = await self._read_register()
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
        An invalid field raises `tdx_measure.EventLogError` before anything is extended."""
        event = WorkloadEvent(
            transition=transition,
            image=image,
            image_id=image_id,
            persist_dirs=tuple(persist_dirs),
            port=port,
        )
        await self.record(event)

    def require_room_for_configure(
        self,
        image: str,
        persist_dirs: Iterable[str],
        port: int,
        *,
        budget: int = CONFIGURE_LOG_BUDGET_BYTES,
    ) -> None:
        """`EventLogFull` if the configure event of this workload would grow the log's JSON past
        `budget` bytes; checked before the configure runs, so a refusal changes nothing."""
        event = WorkloadEvent(
            transition="configure",
            image=image,
            image_id=_LONGEST_IMAGE_ID,
            persist_dirs=tuple(persist_dirs),
            port=port,
        )
        candidate = EventLog.from_events(self._require_started().events)
        candidate.append(event)
        size = len(candidate.to_json().encode("utf-8"))
        if size > budget:
            raise EventLogFull(size, budget)

    async def record(self, event: RuntimeEvent) -> None:
        """Extend RTMR3 with any runtime event (settings, an SSH host key, an identity, a
        workload step), then persist the log. MeasurementPersistError after the extension
        when the file cannot be written (the log in memory still explains RTMR3)."""
        async with self._lock:
            await self._settle_locked()
            await self._record_locked(event)

    def _require_started(self) -> EventLog:
        if self._extended is None:
            raise RuntimeError("MeasurementLog.start() has not completed")
        return self._extended

    async def _read_register(self) -> bytes:
        register = await self._device.read_rtmr3()
        if len(register) != REGISTER_SIZE:
            raise RtmrDeviceError(f"RTMR3 read as {len(register)} bytes")
        return register

    async def _start_new_boot_locked(self, now: int, helpers: tuple[ExecutableEvent, ...]) -> None:
        await asyncio.to_thread(_archive_log_file, self._storage, self._kept)
        self._extended, self._register, self._uncertain = None, ZERO_REGISTER, None
        boot = BootEvent.fresh(now)
        await self._extend_locked(EventLog(boot), boot)
        await self._persist_locked()
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
        self._check_explains(log, register)
        self._extended, self._register, self._uncertain = log, register, None

    def _check_explains(self, log: EventLog, register: bytes) -> None:
        """MeasurementStateError unless `log` replays exactly to `register`."""
        try:
            pending = log.pending(register)
        except ReplayMismatchError as exc:
            raise MeasurementStateError(
                f"RTMR3 is {register.hex()} and the event log {self._file} cannot explain it "
                f"(the log replays to {exc.replayed.hex()}; after a crash between an extension "
                "and its write the register is ahead of the file): the register and the log "
                "disagree; reboot the TD to start a new log"
            ) from exc
        except EventLogError as exc:
            raise MeasurementStateError(f"RTMR3 and the event log disagree: {exc.reason}") from exc
        if pending:
            raise MeasurementStateError(
                f"the event log {self._file} has {len(pending)} event(s) beyond RTMR3 "
                f"{register.hex()}: this service extends before it writes, so they were "
                "written by someone else; they are never extended; reboot the TD to start a "
                "new log"
            )

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

    async def _settle_locked(self) -> None:
        """Before anything else: refuse when the log and RTMR3 went apart, and settle an
        extension whose device call failed from the event held in memory."""
        if self._broken is not None:
            raise MeasurementStateError(self._broken)
        uncertain = self._uncertain
        if uncertain is None:
            return
        assert self._register is not None
        register = await self._read_register()
        if hmac.compare_digest(register, self._register):
            self._uncertain = None
            return
        expected = extend(self._register, event_digest(uncertain))
        if not hmac.compare_digest(register, expected):
            self._broken = (
                f"RTMR3 is {register.hex()}, which neither the log nor the log with the event "
                "whose extension failed explains: another process extends RTMR3 (or the TD "
                "rebooted under the service); restart after a reboot of the TD"
            )
            raise MeasurementStateError(self._broken)
        self._uncertain = None
        self._register = register
        self._extended = EventLog.from_events((*self._require_started().events, uncertain))
        await self._persist_locked()

    async def _record_locked(self, event: RuntimeEvent) -> None:
        candidate = EventLog.from_events(self._require_started().events)
        candidate.append(event)
        await self._extend_locked(candidate, event)
        await self._persist_locked()

    async def _persist_locked(self) -> None:
        """Write the log as far as it is extended, durably (it only serves a restart)."""
        data = self._require_started().to_json().encode("utf-8")
        try:
            await asyncio.to_thread(atomic_replace, self._file, data, mode=0o600)
        except OSError as exc:
            raise MeasurementPersistError(
                f"cannot write the event log {self._file}: {exc.strerror or exc}"
            ) from exc

    async def _extend_locked(self, candidate: EventLog, event: Event) -> None:
        """Extend `event` (the last of `candidate`) from memory; then `candidate` is the log."""
        assert self._register is not None
        digest = event_digest(event)
        expected = extend(self._register, digest)
        try:
            reported = await self._device.extend_rtmr3(digest)
        except RtmrDeviceError:
            self._uncertain = event
            raise
        if reported is not None and not hmac.compare_digest(reported, expected):
            self._broken = (
                f"RTMR3 became {reported.hex()} after extending, expected {expected.hex()}: "
                "another process extends RTMR3; the register and the log now disagree"
            )
            raise MeasurementStateError(self._broken)
        self._register = expected
        self._extended = candidate
