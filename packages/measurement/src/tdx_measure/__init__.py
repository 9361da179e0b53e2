"""Runtime measurement log for TDX RTMRs: typed events with one canonical serialization, the
RTMR extension rule and log replay, executable identity read with pyelftools, and a policy a
verifier applies to a replayed log."""

from tdx_measure._elf import find_helper, measure_executable
from tdx_measure._errors import (
    EventLogError,
    ExecutableError,
    ExecutableUnreadableError,
    HelperNotFoundError,
    InvalidPolicyError,
    MeasurementError,
    NotAnElfError,
    PolicyViolationError,
    RegisterLengthError,
    ReplayMismatchError,
)
from tdx_measure._events import (
    DOMAIN_TAG,
    BootEvent,
    Event,
    ExecutableEvent,
    Transition,
    WorkloadEvent,
    decode_event,
    encode_event,
    event_digest,
    event_from_object,
    event_to_object,
)
from tdx_measure._policy import ExecutablePin, MeasurementPolicy, check_log
from tdx_measure._rtmr import (
    REGISTER_SIZE,
    ZERO_REGISTER,
    EventLog,
    VerifiedLog,
    extend,
    replay,
    verify_log,
)

__all__ = [
    "DOMAIN_TAG",
    "REGISTER_SIZE",
    "ZERO_REGISTER",
    "BootEvent",
    "Event",
    "EventLog",
    "EventLogError",
    "ExecutableError",
    "ExecutableEvent",
    "ExecutablePin",
    "ExecutableUnreadableError",
    "HelperNotFoundError",
    "InvalidPolicyError",
    "MeasurementError",
    "MeasurementPolicy",
    "NotAnElfError",
    "PolicyViolationError",
    "RegisterLengthError",
    "ReplayMismatchError",
    "Transition",
    "VerifiedLog",
    "WorkloadEvent",
    "check_log",
    "decode_event",
    "encode_event",
    "event_digest",
    "event_from_object",
    "event_to_object",
    "extend",
    "find_helper",
    "measure_executable",
    "replay",
    "verify_log",
]
