"""The `--ccel` part of `verify-quote`: the firmware's CCEL event log replayed against the quote's
RTMR0-2 (and RTMR3 when the log extends it). Imported only for that option: tdx-measure is the
`event-log` extra."""

from __future__ import annotations

from typing import Any

from tdx_measure import (
    CcelError,
    CcelLog,
    boot_components,
    parse_ccel,
    replay_ccel,
)
from tdx_quote import QuoteFormatError, parse_quote
from tdx_verify._verifier import VerifiedQuote


class MalformedCcel(Exception):
    """The bytes are not a well-formed CCEL; the message says what is malformed."""


def load(data: bytes) -> tuple[CcelLog, dict[str, Any]]:
    """Strictly parse the log and derive its measured boot components."""
    try:
        log = parse_ccel(data)
        return log, boot_components(log).to_object()
    except CcelError as exc:
        raise MalformedCcel(exc.reason) from None


def _unverified_rtmrs(quote: bytes) -> tuple[bytes, ...] | None:
    try:
        return parse_quote(quote, allow_zero_padding=True).body.rtmrs
    except (QuoteFormatError, ValueError):
        return None


def report(
    log: CcelLog,
    components: dict[str, Any],
    verified: VerifiedQuote | None,
    quote: bytes | None,
) -> tuple[dict[str, Any], str | None]:
    """The verdict's "ccel" member, and why the log refutes a verified quote (None when it
    replays to the verified quote's RTMRs). For a quote that did not verify the replay is still
    compared with the quote's own RTMRs, when it parses, but `matches` stays false."""
    rtmrs: tuple[bytes, ...] | None = verified.quote.body.rtmrs if verified else None
    if rtmrs is None and quote is not None:
        rtmrs = _unverified_rtmrs(quote)
    if rtmrs is None:
        replay: list[dict[str, Any]] = [
            {"rtmr": i, "log": value.hex(), "quote": None, "compared": False, "equal": False}
            for i, value in enumerate(log.replay())
        ]
        mismatched: tuple[int, ...] = ()
    else:
        result = replay_ccel(log, rtmrs)
        replay = result.to_object()
        mismatched = result.mismatched
    member = {
        "events": len(log.events),
        "quote_verified": verified is not None,
        "matches": verified is not None and rtmrs is not None and not mismatched,
        "replay": replay,
        "components": components,
    }
    if verified is None or not mismatched:
        return member, None
    names = ", ".join(f"RTMR{i}" for i in mismatched)
    return member, f"the CCEL event log does not replay to the quote's {names}"
