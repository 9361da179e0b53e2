"""The firmware's CCEL event log (`tdx_measure.parse_ccel`), its replay, its measured boot
components and its encoding.

Refusing is `tdx_measure.CcelError` (a malformed log, or an event used for the boot components
that misstates its own digest). A log that parses must replay to four 48-byte registers,
compare against any quote's RTMRs without raising, and encode to bytes that parse back to the
same log with the same replay.
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_measure import CcelError, boot_components, parse_ccel, replay_ccel

_ZERO_RTMRS = (bytes(48),) * 4


def target(data: bytes) -> None:
    log = parse_ccel(data)
    replayed = log.replay()
    if len(replayed) != 4 or any(len(r) != 48 for r in replayed):
        raise Finding("the replay is not four 48-byte registers")
    if replay_ccel(log, replayed).mismatched:
        raise Finding("a log does not replay to its own replay")
    replay_ccel(log, _ZERO_RTMRS)  # a mismatch is an answer, never an exception
    boot_components(log)
    again = parse_ccel(log.encode())
    if again != log or again.replay() != replayed:
        raise Finding("encode does not parse back to the same log")


HARNESS = Harness(
    name="ccel",
    summary="tdx_measure parse_ccel, replay, boot components and the encode round trip",
    target=target,
    allowed=(CcelError,),
)
