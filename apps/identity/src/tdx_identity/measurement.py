"""The identity service's runtime measurement log: which helper programs it runs and which
workload it configures and exposes, recorded in an event log and extended into RTMR3.

The register. On a TDX guest running Linux 6.16 or later (``CONFIG_TSM_MEASUREMENTS``, the
``tdx_guest`` driver), each RTMR is a sysfs file of the TSM measurement-register interface,
``/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384`` (ABI document
``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``): reading it returns the 48-byte
value, writing exactly 48 bytes at offset 0 extends it (``TDG.MR.RTMR.EXTEND``). In development the
``tdx-sim`` routes ``GET /rtmr`` and ``POST /rtmr/3/extend`` play that part; a restart of the
simulator is a reboot of the simulated TD (RTMR3 back to zero).

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
import os
import re
import stat
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol

import httpx

from tdx_identity._fs import atomic_replace, ensure_private_dir
from tdx_identity._http import HttpClients
from tdx_identity.exceptions import StartupError
from tdx_measure import (
    REGISTER_SIZE,
    ZERO_REGISTER,
    BootEvent,
    Event,
    EventLog,
    EventLogError,
    ExecutableError,
    ExecutableEvent,
    HelperNotFoundError,
    ReplayMismatchError,
    Transition,
    WorkloadEvent,
    event_digest,
    extend,
    find_helper,
    measure_executable,
)

SYSFS_RTMR3_PATH: Final = Path("/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384")
EVENTLOG_FILE: Final = "eventlog.json"
PREVIOUS_LOGS_KEPT: Final = 16
_PREVIOUS_NAME: Final = re.compile(r"eventlog\.previous-([1-9][0-9]{0,9})\.json")
_MAX_LOG_FILE_BYTES: Final = 8 * 1024 * 1024
_MAX_SIM_ANSWER_BYTES: Final = 64 * 1024


class MeasurementRuntimeError(Exception):
    """Base of the errors of the service's runtime measurement; the message says what to fix."""


class RtmrDeviceError(MeasurementRuntimeError):
    """RTMR3 could not be read or extended (kernel interface or simulator failure)."""


class NoRtmrDeviceError(MeasurementRuntimeError, StartupError):
    """Neither the kernel's RTMR3 file nor a mock TDX URL is available."""


class HelperMeasurementError(MeasurementRuntimeError, StartupError):
    """A helper program is missing or cannot be measured; `role` names which one."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"helper for role {role!r}: {reason}")
        self.role = role


class MeasurementStateError(MeasurementRuntimeError, StartupError):
    """RTMR3 and the persisted event log disagree: the log cannot explain the register. Only a
    reboot of the TD (RTMR3 back to zero) clears this; the log is never reset to fit."""


class MeasurementPersistError(MeasurementRuntimeError):
    """The event log could not be written; nothing was extended."""


class RtmrDevice(Protocol):
    """Reads and extends RTMR3."""

    async def read_rtmr3(self) -> bytes:
        """The register's current 48-byte value."""
        ...

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        """Extend the register with a 48-byte digest; its new value when the device reports it."""
        ...


def _check_digest(digest: bytes) -> None:
    if len(digest) != REGISTER_SIZE:
        raise ValueError(f"an RTMR digest is {REGISTER_SIZE} bytes, got {len(digest)}")


class SysfsRtmrDevice:
    """RTMR3 through the Linux (>= 6.16) TSM measurement-register sysfs file of ``tdx_guest``:
    a read returns the 48-byte value, a 48-byte write at offset 0 extends it."""

    def __init__(self, path: Path = SYSFS_RTMR3_PATH) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    async def read_rtmr3(self) -> bytes:
        return await asyncio.to_thread(self._read)

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        _check_digest(digest)
        await asyncio.to_thread(self._write, bytes(digest))
        return None

    def _read(self) -> bytes:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                value = os.read(fd, REGISTER_SIZE + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RtmrDeviceError(f"cannot read {self._path}: {exc.strerror or exc}") from exc
        if len(value) != REGISTER_SIZE:
            raise RtmrDeviceError(
                f"{self._path} returned {len(value)} bytes, expected {REGISTER_SIZE}"
            )
        return value

    def _write(self, digest: bytes) -> None:
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                written = os.write(fd, digest)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RtmrDeviceError(f"cannot extend {self._path}: {exc.strerror or exc}") from exc
        if written != REGISTER_SIZE:
            raise RtmrDeviceError(f"{self._path} took {written} of {REGISTER_SIZE} digest bytes")


class SimRtmrDevice:
    """RTMR3 of the ``tdx-sim`` simulated TD, through ``GET {base}/rtmr`` and
    ``POST {base}/rtmr/3/extend``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self._base_url

    async def read_rtmr3(self) -> bytes:
        answer = await self._call("GET", "/rtmr", None)
        return self._register(answer, "rtmr3")

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        _check_digest(digest)
        answer = await self._call("POST", "/rtmr/3/extend", {"digest": digest.hex()})
        if answer.get("index") != 3:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} extended {answer.get('index')!r}")
        return self._register(answer, "value")

    async def _call(self, method: str, path: str, body: dict[str, str] | None) -> dict[str, object]:
        url = f"{self._base_url}{path}"
        try:
            async with self._clients.client() as client:
                response = await client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url} answered {method} {path} with HTTP "
                f"{response.status_code}"
            )
        if len(response.content) > _MAX_SIM_ANSWER_BYTES:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent an oversized answer")
        try:
            answer = response.json()
        except ValueError as exc:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent no JSON") from exc
        if type(answer) is not dict:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent no JSON object")
        return answer

    def _register(self, answer: dict[str, object], key: str) -> bytes:
        text = answer.get(key)
        if (
            type(text) is not str
            or len(text) != 2 * REGISTER_SIZE
            or re.fullmatch(r"[0-9a-f]+", text) is None
        ):
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url}: {key!r} is not {REGISTER_SIZE} bytes of hex"
            )
        return bytes.fromhex(text)


def select_rtmr_device(sysfs_path: Path, mock_tdx_url: str | None) -> RtmrDevice:
    """The kernel's RTMR3 file when it exists, else the simulator at the mock TDX URL."""
    if sysfs_path.exists():
        if not os.access(sysfs_path, os.R_OK | os.W_OK):
            raise NoRtmrDeviceError(
                f"{sysfs_path} exists but this user cannot read and write it; run the service "
                "with access to it"
            )
        return SysfsRtmrDevice(sysfs_path)
    if mock_tdx_url:
        return SimRtmrDevice(mock_tdx_url)
    raise NoRtmrDeviceError(
        f"no RTMR3 interface: {sysfs_path} does not exist (not a TDX guest, or a kernel before "
        "6.16 without CONFIG_TSM_MEASUREMENTS) and MOCK_TDX_URL / --mock-tdx-url is not set"
    )


@dataclass(frozen=True)
class HelperSpec:
    """How to find the program of one role: bare names looked up on the search path in order,
    then absolute fallback paths (for programs packaged outside PATH)."""

    names: tuple[str, ...]
    fallbacks: tuple[Path, ...] = ()


HELPER_ROLES: Final[Mapping[str, HelperSpec]] = MappingProxyType(
    {
        "podman": HelperSpec(("podman",)),
        "oci-runtime": HelperSpec(("runc",)),
        "conmon": HelperSpec(
            ("conmon",), (Path("/usr/libexec/podman/conmon"), Path("/usr/bin/conmon"))
        ),
        "gocryptfs": HelperSpec(("gocryptfs",)),
        "fusermount": HelperSpec(("fusermount3", "fusermount")),
    }
)


def resolve_helper(role: str, spec: HelperSpec, *, search_path: str | None = None) -> Path:
    """The real path of the program for `role`: the first of `spec.names` on the search path
    (`None`: the process's PATH), else the first fallback that resolves to a regular file."""
    tried: list[str] = []
    for name in spec.names:
        try:
            return find_helper(name, search_path=search_path)
        except HelperNotFoundError as exc:
            tried.append(exc.reason)
    for fallback in spec.fallbacks:
        try:
            real = fallback.resolve(strict=True)
        except (OSError, RuntimeError):
            tried.append(f"{fallback} does not exist")
            continue
        if real.is_file():
            return real
        tried.append(f"{fallback} is not a regular file")
    raise HelperMeasurementError(role, "not found (" + "; ".join(tried) + ")")


def measure_helpers(
    helpers: Mapping[str, HelperSpec] = HELPER_ROLES, *, search_path: str | None = None
) -> tuple[ExecutableEvent, ...]:
    """Find and measure every helper, in the mapping's order. Blocking (reads every file)."""
    events: list[ExecutableEvent] = []
    for role, spec in helpers.items():
        path = resolve_helper(role, spec, search_path=search_path)
        try:
            events.append(measure_executable(path, role))
        except ExecutableError as exc:
            raise HelperMeasurementError(role, exc.reason) from exc
    return tuple(events)


def _read_log_file(path: Path) -> bytes | None:
    """The persisted log's bytes, or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > _MAX_LOG_FILE_BYTES:
                raise OSError(f"{path} is larger than {_MAX_LOG_FILE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MeasurementLog:
    """The service's RTMR3 event log: persisted in the storage directory, each event written
    ahead of its extension into RTMR3 through `device`. One instance per storage directory."""

    def __init__(
        self,
        storage_path: Path,
        device: RtmrDevice,
        *,
        helpers: Mapping[str, HelperSpec] = HELPER_ROLES,
        search_path: str | None = None,
        previous_logs_kept: int = PREVIOUS_LOGS_KEPT,
    ) -> None:
        if previous_logs_kept < 0:
            raise ValueError("previous_logs_kept must not be negative")
        self._storage = storage_path
        self._file = storage_path / EVENTLOG_FILE
        self._device = device
        self._helpers = helpers
        self._search_path = search_path
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
            helpers = await asyncio.to_thread(
                measure_helpers, self._helpers, search_path=self._search_path
            )
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

    async def _record_locked(self, event: ExecutableEvent | WorkloadEvent) -> None:
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
