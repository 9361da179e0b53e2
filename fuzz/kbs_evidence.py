"""The key broker's RCAR bodies and the evidence in them.

The first byte picks the body, the rest is the raw body: even, `POST /kbs/v0/auth` (`Request`);
odd, `POST /kbs/v0/attest`: `Attestation.from_json`, then the broker's `EvidenceVerifier` with
the session nonce `SESSION_NONCE`: the nonce, tdx-identity's additional evidence
(`IdentityEvidence.decode`, the proof of possession), the quote (`parse_quote`, the report-data
binding), the event log (`EventLog.from_json`, replay against the quote's RTMR3). The DCAP
verification itself is the `verify` harness's: here a stand-in (`ParsedOnly`) hands the parsed
quote back as verified (UpToDate), so the steps after it are reached.

Refusing is the broker's `KbsMessageError` (the body is not a JSON object),
`tdx_kbs_protocol.MessageError` and the broker's `EvidenceError` family.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fuzz._harness import Finding, Harness
from tdx_kbs.broker import _json
from tdx_kbs.errors import KbsMessageError
from tdx_kbs.verification import EvidenceError, EvidenceVerifier
from tdx_kbs_protocol import Attestation, MessageError, Request
from tdx_quote import Quote, parse_quote

SESSION_NONCE = "c2Vzc2lvbi1ub25jZS1mb3ItdGhlLWZ1enotaGFybmVzcyE="
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Facts:
    quote: Quote
    tcb_status: str
    advisory_ids: tuple[str, ...]


class ParsedOnly:
    """A stand-in for DCAP verification: the quote, parsed, is "verified" (UpToDate)."""

    async def verify_quote(self, quote: bytes, *, now: datetime) -> Facts:
        return Facts(parse_quote(quote), "UpToDate", ())


VERIFIER = EvidenceVerifier(ParsedOnly())


def _run_to_end(attestation: Attestation) -> None:
    """Run the verifier's coroutine: it awaits nothing that suspends, so one send finishes it."""
    coroutine = VERIFIER.verify(attestation, SESSION_NONCE, now=NOW)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise Finding("the evidence verifier suspended on a stand-in that never does")


def target(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        Request.from_json(_json(data[1:], "auth"))
    else:
        _run_to_end(Attestation.from_json(_json(data[1:], "attest")))


HARNESS = Harness(
    name="kbs_evidence",
    summary="the key broker's auth/attest bodies and evidence checks (DCAP stood in for)",
    target=target,
    allowed=(KbsMessageError, MessageError, EvidenceError),
)
