"""The exceptions this library raises, one hierarchy under `MeasurementError`."""

from __future__ import annotations

from pathlib import Path


class MeasurementError(Exception):
    """Base of every error raised by tdx_measure; `reason` says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RegisterLengthError(MeasurementError, ValueError):
    """A register value or digest handed to `extend` is not 48 bytes."""


class EventLogError(MeasurementError, ValueError):
    """An event or an event log is malformed: unknown type, missing/extra field, wrong type or
    value, non-canonical encoding, or a log whose structure is wrong (no leading boot event)."""


class CcelError(EventLogError):
    """A CCEL (TCG2 crypto-agile firmware event log) is malformed: a length or count beyond the
    buffer or its bounds, an unknown algorithm, a bad Spec ID event, or event data that does not
    decode as its event type requires. `offset` is where in the buffer the fault is, or None."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"at byte {offset}: {reason}")
        self.offset = offset


class CcelReplayMismatchError(MeasurementError):
    """A CCEL replays, but not to the RTMR values the quote reports; `mismatched` lists the
    RTMR numbers (0..3) whose replayed value differs."""

    def __init__(self, mismatched: tuple[int, ...]) -> None:
        names = ", ".join(f"RTMR{index}" for index in mismatched)
        super().__init__(
            f"the CCEL event log does not replay to the quote's {names}: the log was altered, "
            "truncated or belongs to another boot"
        )
        self.mismatched = mismatched


class ReplayMismatchError(MeasurementError):
    """Replaying the log does not give the register value the quote reports."""

    def __init__(self, expected: bytes, replayed: bytes) -> None:
        super().__init__(
            f"replayed register {replayed.hex()} does not equal the expected {expected.hex()}: "
            "the log was altered, reordered, truncated or does not belong to this quote"
        )
        self.expected = expected
        self.replayed = replayed


class ExecutableError(MeasurementError):
    """An executable could not be measured; `path` is the path that was asked for."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)


class ExecutableUnreadableError(ExecutableError):
    """The file does not exist, is not a regular file, or cannot be read."""


class NotAnElfError(ExecutableError):
    """The file is readable but is not a well-formed ELF executable or shared object."""


class HelperNotFoundError(MeasurementError):
    """A helper program is not on the search path."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"helper {name!r}: {reason}")
        self.name = name


class InvalidPolicyError(MeasurementError, ValueError):
    """A policy value is malformed (an empty pin, a digest of the wrong length, a bad role)."""


class PolicyViolationError(MeasurementError):
    """The log is well-formed and replays, but the policy refuses one of its events.
    `subject` names what was refused (a role, "image" or "image_id"), `value` the refused value."""

    def __init__(self, subject: str, value: str, reason: str) -> None:
        super().__init__(f"{subject} {value}: {reason}")
        self.subject = subject
        self.value = value
