"""The `--event-log` part of `verify-quote`: a tdx-measure RTMR3 event log replayed against the
quote that verified. Imported only for that option: tdx-measure is the `event-log` extra."""

from __future__ import annotations

from typing import Any

from tdx_measure import EventLog, EventLogError, ReplayMismatchError, verify_log
from tdx_verify._verifier import VerifiedQuote


class MalformedEventLog(Exception):
    """The bytes are not a tdx-measure event log; the message says what is malformed."""


def load(data: bytes) -> EventLog:
    """Strictly parse the log (`EventLog.from_json`)."""
    try:
        return EventLog.from_json(data)
    except EventLogError as exc:
        raise MalformedEventLog(exc.reason) from None


def unmatched(log: EventLog) -> dict[str, Any]:
    """The verdict's "event_log" member for a log not replayed against a verified quote."""
    workload = log.workload
    return {
        "replayed_rtmr3": log.replay().hex(),
        "matches": False,
        "workload": None if workload is None else workload.to_object(),
    }


def replay_against(log: EventLog, verified: VerifiedQuote) -> tuple[dict[str, Any], str | None]:
    """The verdict's "event_log" member, and why the log refutes the quote: None when it
    replays to the verified quote's RTMR3."""
    try:
        replayed = verify_log(log, verified.quote.body.rtmr3)
    except ReplayMismatchError as exc:
        return unmatched(log), f"event log does not replay to the quote's RTMR3: {exc.reason}"
    workload = replayed.workload
    report = {
        "replayed_rtmr3": replayed.rtmr.hex(),
        "matches": True,
        "workload": None if workload is None else workload.to_object(),
    }
    return report, None
