"""The runtime event log (`tdx_measure.EventLog.from_json`) and its replay.

Refusing is `tdx_measure.EventLogError`. A log that parses must replay (to a 48-byte RTMR),
and its canonical form (`to_json`) must read back to an equal log with the same replay (the
log's own text need not be canonical: the README says digests come from the typed events).

The firmware's CCEL has its own harness (fuzz/ccel.py).
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_measure import REGISTER_SIZE, EventLog, EventLogError


def target(data: bytes) -> None:
    log = EventLog.from_json(data)
    rtmr = log.replay()
    if len(rtmr) != REGISTER_SIZE:
        raise Finding(f"replay gave {len(rtmr)} bytes")
    text = log.to_json()
    again = EventLog.from_json(text)
    if again != log or again.replay() != rtmr or again.to_json() != text:
        raise Finding("to_json does not read back to the same log")


HARNESS = Harness(
    name="event_log",
    summary="tdx_measure EventLog.from_json, replay and the canonical round trip",
    target=target,
    allowed=(EventLogError,),
)
