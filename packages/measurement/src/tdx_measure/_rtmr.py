"""The TDX register extension rule, replay of an event log, the append-only log itself, and the
`VerifiedLog` that only `verify_log` makes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Final

from tdx_measure._errors import EventLogError, RegisterLengthError, ReplayMismatchError
from tdx_measure._events import (
    BootEvent,
    ConfigEvent,
    Event,
    IdentityEvent,
    IdentityRole,
    RuntimeEvent,
    SshHostKeyEvent,
    TlsKeyEvent,
    WorkloadEvent,
    event_digest,
    event_from_object,
    event_to_object,
)
from tdx_measure._json import dumps_canonical, loads_strict

REGISTER_SIZE: Final = 48
ZERO_REGISTER: Final = bytes(REGISTER_SIZE)
LOG_FORMAT: Final = "tdx-measure/eventlog/v1"
MAX_LOG_BYTES: Final = 4 * 1024 * 1024
MAX_LOG_EVENTS: Final = 4096


def extend(register: bytes, digest: bytes) -> bytes:
    """What TDG.MR.RTMR.EXTEND does: ``SHA-384(register ‖ digest)``, both 48 bytes."""
    if len(register) != REGISTER_SIZE:
        raise RegisterLengthError(f"register is {len(register)} bytes, expected {REGISTER_SIZE}")
    if len(digest) != REGISTER_SIZE:
        raise RegisterLengthError(f"digest is {len(digest)} bytes, expected {REGISTER_SIZE}")
    return hashlib.sha384(bytes(register) + bytes(digest)).digest()


def replay(events: Iterable[Event], initial: bytes = ZERO_REGISTER) -> bytes:
    """The register value obtained by extending each event's digest, in order, into `initial`."""
    register = initial
    if len(register) != REGISTER_SIZE:
        raise RegisterLengthError(f"initial register is {len(register)} bytes")
    for event in events:
        register = extend(register, event_digest(event))
    return register


def _latest_workload(events: tuple[Event, ...]) -> WorkloadEvent | None:
    for event in reversed(events):
        if isinstance(event, WorkloadEvent):
            return event
    return None


def _latest_ssh_host_key(events: tuple[Event, ...]) -> str | None:
    for event in reversed(events):
        if isinstance(event, SshHostKeyEvent):
            return event.public_key
    return None


def _latest_tls_key(events: tuple[Event, ...]) -> bytes | None:
    for event in reversed(events):
        if isinstance(event, TlsKeyEvent):
            return event.spki_sha256
    return None


def _latest_config(events: tuple[Event, ...]) -> ConfigEvent | None:
    for event in reversed(events):
        if isinstance(event, ConfigEvent):
            return event
    return None


def _latest_identity(events: tuple[Event, ...], role: IdentityRole) -> bytes | None:
    for event in reversed(events):
        if isinstance(event, IdentityEvent) and event.role == role:
            return event.pubkey
    return None


def _leading_boot(events: tuple[Event, ...]) -> BootEvent:
    if not events or not isinstance(events[0], BootEvent):
        raise EventLogError("a log must start with a boot event")
    return events[0]


class EventLog:
    """An append-only measurement log for one register during one boot: a boot event first,
    then executable, workload, SSH host key and identity events in the order they were
    extended."""

    __slots__ = ("_boot", "_events")

    def __init__(self, boot: BootEvent) -> None:
        if not isinstance(boot, BootEvent):
            raise EventLogError("a log must start with a boot event")
        self._boot = boot
        self._events: list[Event] = [boot]

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventLog:
        """Rebuild a log from its events; the first must be the only boot event."""
        items = tuple(events)
        log = cls(_leading_boot(items))
        for index, event in enumerate(items[1:], start=1):
            try:
                log.append(event)
            except EventLogError as exc:
                raise EventLogError(f"event {index}: {exc.reason}") from None
        return log

    def append(self, event: Event) -> bytes:
        """Record an event and return its digest, the value to extend into the register."""
        if isinstance(event, BootEvent):
            raise EventLogError("a boot event only starts a log: a reboot starts a new log")
        if not isinstance(event, RuntimeEvent):
            raise EventLogError(f"{type(event).__name__} is not an event")
        if len(self._events) >= MAX_LOG_EVENTS:
            raise EventLogError(f"the log already holds the maximum of {MAX_LOG_EVENTS} events")
        self._events.append(event)
        return event_digest(event)

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def boot(self) -> BootEvent:
        return self._boot

    @property
    def workload(self) -> WorkloadEvent | None:
        """The latest workload transition, or None before the first configure."""
        return _latest_workload(tuple(self._events))

    @property
    def ssh_host_key(self) -> str | None:
        """The latest measured SSH host key line, or None when the log has none."""
        return _latest_ssh_host_key(tuple(self._events))

    @property
    def tls_key(self) -> bytes | None:
        """The SHA-256 of the latest measured TLS key's SPKI, or None when the log has none."""
        return _latest_tls_key(tuple(self._events))

    @property
    def config(self) -> ConfigEvent | None:
        """The latest measured settings (`config` event), or None when the log has none."""
        return _latest_config(tuple(self._events))

    def identity(self, role: IdentityRole) -> bytes | None:
        """The public key of the latest `role` ("operator" or "owner") identity event, or None.
        A registration the registry refused leaves its event behind: the latest one counts."""
        return _latest_identity(tuple(self._events), role)

    def replay(self, initial: bytes = ZERO_REGISTER) -> bytes:
        """The register value this log must have produced from `initial` (zero at TD start)."""
        return replay(self._events, initial)

    def pending(self, register: bytes) -> tuple[Event, ...]:
        """After a service restart within the same boot: the events recorded but not yet
        extended into `register` (the log is written ahead of each extension). Refuses a zero
        register (the TD rebooted: start a new log) and a register no prefix of the log explains."""
        if len(register) != REGISTER_SIZE:
            raise RegisterLengthError(f"register is {len(register)} bytes")
        if hmac.compare_digest(register, ZERO_REGISTER):
            raise EventLogError("the register is zero: the TD rebooted, start a new log")
        value = ZERO_REGISTER
        for count, event in enumerate(self._events, start=1):
            value = extend(value, event_digest(event))
            if hmac.compare_digest(value, register):
                return tuple(self._events[count:])
        raise ReplayMismatchError(register, value)

    def to_json(self) -> str:
        """The log as canonical JSON: ``{"events": [...], "format": "tdx-measure/eventlog/v1"}``."""
        document = {"format": LOG_FORMAT, "events": [event_to_object(e) for e in self._events]}
        return dumps_canonical(document).decode("utf-8")

    @classmethod
    def from_json(cls, data: str | bytes) -> EventLog:
        """Strictly parse `to_json` output; anything malformed raises `EventLogError`."""
        document = loads_strict(data, max_bytes=MAX_LOG_BYTES)
        if type(document) is not dict:
            raise EventLogError("an event log must be a JSON object")
        if set(document) != {"format", "events"}:
            raise EventLogError(
                f"an event log has exactly the keys events, format: {sorted(document)}"
            )
        if document["format"] != LOG_FORMAT:
            raise EventLogError(f"unknown event log format {document['format']!r}")
        raw_events = document["events"]
        if type(raw_events) is not list:
            raise EventLogError("events must be a JSON array")
        if len(raw_events) > MAX_LOG_EVENTS:
            raise EventLogError(f"{len(raw_events)} events, more than {MAX_LOG_EVENTS}")
        events: list[Event] = []
        for index, raw in enumerate(raw_events):
            try:
                events.append(event_from_object(raw))
            except EventLogError as exc:
                raise EventLogError(f"event {index}: {exc.reason}") from None
        return cls.from_events(events)

    def __len__(self) -> int:
        return len(self._events)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventLog):
            return NotImplemented
        return self._events == other._events

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventLog({len(self._events)} events)"


_VERIFY_LOG: Final = object()
"""The constructor token of `VerifiedLog`: only `verify_log` passes it."""


class VerifiedLog:
    """An event log that replayed, from zero, to the register value the caller took from a
    verified quote. Only `verify_log` makes one (constructing it directly raises `TypeError`), so
    `check_log` can never be handed a log nobody replayed. It is a snapshot: the events as they
    were replayed, and the register value they replay to."""

    __slots__ = ("_events", "_rtmr")

    def __init__(self, events: tuple[Event, ...], rtmr: bytes, *, _token: object = None) -> None:
        if _token is not _VERIFY_LOG:
            raise TypeError("a VerifiedLog cannot be constructed directly: verify_log returns it")
        self._events = events
        self._rtmr = rtmr

    @property
    def events(self) -> tuple[Event, ...]:
        """The events, boot event first, in the order they were extended."""
        return self._events

    @property
    def boot(self) -> BootEvent:
        return _leading_boot(self._events)

    @property
    def rtmr(self) -> bytes:
        """The register value the events replay to (the quote's, which `verify_log` compared)."""
        return self._rtmr

    @property
    def workload(self) -> WorkloadEvent | None:
        """The latest workload transition, or None before the first configure."""
        return _latest_workload(self._events)

    @property
    def ssh_host_key(self) -> str | None:
        """The latest measured SSH host key line, or None when the log has none."""
        return _latest_ssh_host_key(self._events)

    @property
    def tls_key(self) -> bytes | None:
        """The SHA-256 of the latest measured TLS key's SPKI, or None when the log has none."""
        return _latest_tls_key(self._events)

    @property
    def config(self) -> ConfigEvent | None:
        """The latest measured settings (`config` event), or None when the log has none."""
        return _latest_config(self._events)

    def identity(self, role: IdentityRole) -> bytes | None:
        """The public key of the latest `role` ("operator" or "owner") identity event, or None.
        A registration the registry refused leaves its event behind: the latest one counts."""
        return _latest_identity(self._events, role)

    def __len__(self) -> int:
        return len(self._events)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerifiedLog):
            return NotImplemented
        return self._events == other._events and self._rtmr == other._rtmr

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"VerifiedLog({len(self._events)} events, rtmr={self._rtmr.hex()[:16]}...)"


def verify_log(log: EventLog, expected_rtmr: bytes) -> VerifiedLog:
    """Replay `log` from zero and compare, in constant time, with `expected_rtmr` (the RTMR a
    verified quote reports): the `VerifiedLog` on a match, `ReplayMismatchError` otherwise."""
    if len(expected_rtmr) != REGISTER_SIZE:
        raise RegisterLengthError(f"expected register is {len(expected_rtmr)} bytes")
    events = log.events
    replayed = replay(events)
    if not hmac.compare_digest(replayed, expected_rtmr):
        raise ReplayMismatchError(expected_rtmr, replayed)
    return VerifiedLog(events, replayed, _token=_VERIFY_LOG)
