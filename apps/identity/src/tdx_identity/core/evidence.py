"""The evidence this TD gives the owner's key broker (a `tdx_kbs_protocol.EvidenceProvider`).

The broker releases the store key only against fresh evidence: a quote whose report_data binds
its nonce, the ephemeral TEE key it encrypts the key to, and the `additional_evidence` string,
which carries this instance's public key, a proof that the instance key signed the nonce and
TEE key (`IdentityEvidence`), and the RTMR3 event log that explains the quote's RTMR3 (so the
broker can replay it and see the owner it names).

`KbsClient.get_resource` asks for the additional evidence first and then for a quote over the
binding of it. The log must be the one RTMR3 holds when the quote is taken, so `quote` takes it
while the log is frozen and refuses (QuoteSourceError) when the log changed in between; the
broker would refuse such evidence anyway (it would not replay). One `MeasuredEvidence` serves
one attestation: `KbsKeyProvider` makes a new one for each.
"""

from __future__ import annotations

import hmac
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdx_quote
from tdx_identity.core.ports import QuoteSource
from tdx_identity.exceptions import QuoteSourceError
from tdx_kbs_protocol import IdentityEvidence, TdxEvidence, TeePublicKey

__all__ = ["FrozenEventLog", "MeasuredEvidence"]


class FrozenEventLog(Protocol):
    """The RTMR3 event log (`MeasurementLog`): its JSON text, now or held still."""

    def event_log_json(self) -> str: ...

    def frozen(self) -> AbstractAsyncContextManager[str]: ...


class MeasuredEvidence:
    """Evidence for one KBS attestation: the instance key's `IdentityEvidence` over the current
    RTMR3 event log, then a quote over the given report_data taken under that same log."""

    def __init__(
        self, instance_key: Ed25519PrivateKey, quotes: QuoteSource, event_log: FrozenEventLog
    ) -> None:
        self._key = instance_key
        self._quotes = quotes
        self._log = event_log
        self._sent_log: str | None = None

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        """`IdentityEvidence` (instance key, proof of possession over nonce and TEE key, the
        current event log) as the `additional_evidence` string."""
        event_log = self._log.event_log_json()
        self._sent_log = event_log
        return IdentityEvidence.create(self._key, nonce, tee_pubkey, event_log).encode()

    async def quote(self, report_data: bytes) -> TdxEvidence:
        """A quote of this TD carrying exactly `report_data`, taken while the event log is
        still the one `additional_evidence` sent; QuoteSourceError otherwise."""
        sent = self._sent_log
        if sent is None:
            raise QuoteSourceError("a quote for the key broker was asked before its evidence")
        async with self._log.frozen() as event_log:
            if event_log != sent:
                raise QuoteSourceError(
                    "the RTMR3 event log changed while the key broker's evidence was made; "
                    "try again"
                )
            quote = await self._quotes.get_quote(report_data)
        try:
            parsed = tdx_quote.parse_quote(quote, allow_zero_padding=True)
        except ValueError as exc:
            raise QuoteSourceError(f"the quote source returned a malformed quote: {exc}") from exc
        if not hmac.compare_digest(parsed.body.report_data, report_data):
            raise QuoteSourceError("the quote source returned a quote for other report_data")
        return TdxEvidence(quote=quote, cc_eventlog=None)
