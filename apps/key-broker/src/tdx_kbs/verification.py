"""The evidence of `POST /kbs/v0/attest`, verified into the claims the resource policy reads.

Checks, in order (the first failure refuses the attest; nothing is kept but the spent nonce):
the runtime data's nonce is the session's (constant time) → the additional evidence is
tdx-identity's `IdentityEvidence` (instance key, RTMR3 event log, proof of possession) → the
instance key signed the nonce and the TEE public key (possession) → the quote parses and its
report_data is exactly `runtime_data_binding(nonce, tee-pubkey, additional_evidence)` (so the
quote commits to the TEE key resources will be encrypted to, and to the instance key and event
log) → the quote passes full DCAP verification (tdx-verify, trusted root, collateral from the
PCCS) → the event log parses and replays to the quote's RTMR3.

The DCAP step refuses only what is never acceptable (a bad signature or chain, a revoked TCB,
reserved or migratable TD attributes); the TCB status and the debug bit become claims, and the
resource policy decides on them (the shipped policy accepts `UpToDate` only, never debug).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tdx_kbs_protocol import (
    Attestation,
    IdentityEvidence,
    MessageError,
    runtime_data_binding,
)
from tdx_measure import (
    EventLog,
    EventLogError,
    ExecutableEvent,
    ReplayMismatchError,
    VerifiedLog,
    event_to_object,
    verify_log,
)
from tdx_quote import Quote, QuoteFormatError, parse_quote
from tdx_verify import (
    CollateralCache,
    PccsClient,
    PccsError,
    Policy,
    QuoteParseError,
    VerificationError,
    Verifier,
)

DEBUG_BIT = 1


class EvidenceError(Exception):
    """Evidence the broker refuses; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonceMismatch(EvidenceError):
    """The runtime data's nonce is not the session's."""


class IdentityEvidenceRefused(EvidenceError):
    """The additional evidence is not tdx-identity's, or its proof of possession is wrong."""


class BindingMismatch(EvidenceError):
    """The quote's report_data does not commit to this runtime data and additional evidence."""


class QuoteRefused(EvidenceError):
    """The quote does not parse or does not pass DCAP verification."""


class EventLogRefused(EvidenceError):
    """The event log does not parse or does not replay to the quote's RTMR3."""


class CollateralUnavailable(EvidenceError):
    """The PCCS could not provide the collateral: nothing about the evidence was decided."""


class DcapFacts(Protocol):
    """What the broker reads of a `tdx_verify.VerifiedQuote`."""

    @property
    def quote(self) -> Quote: ...

    @property
    def tcb_status(self) -> str: ...

    @property
    def advisory_ids(self) -> tuple[str, ...]: ...


class QuoteVerifier(Protocol):
    """Full DCAP verification (`tdx_verify.CollateralCache` is one)."""

    async def verify_quote(self, quote: bytes, *, now: datetime) -> DcapFacts: ...


DCAP_POLICY = Policy(accepted_tcb_statuses=None, allow_debug=True)
"""What DCAP itself refuses; the TCB status and the debug bit are left to the resource policy."""


@dataclass
class DcapVerifier:
    """A `QuoteVerifier` over a PCCS, trusting `root_ca_pem` (else Intel's SGX root)."""

    cache: CollateralCache
    client: PccsClient

    @classmethod
    def connect(cls, *, pccs_url: str, root_ca_pem: bytes | None) -> DcapVerifier:
        client = PccsClient(pccs_url)
        cache = CollateralCache(client, Verifier(root_ca_pem=root_ca_pem, policy=DCAP_POLICY))
        return cls(cache=cache, client=client)

    async def verify_quote(self, quote: bytes, *, now: datetime) -> DcapFacts:
        return await self.cache.verify_quote(quote, now=now)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class AttestedClaims:
    """What an attest established: the policy input's `tdx` and `identity` parts, and the TEE
    public key (JWK) resources are encrypted to."""

    tdx: Mapping[str, Any]
    identity: Mapping[str, Any]
    tee_pubkey: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "tdx": dict(self.tdx),
            "identity": dict(self.identity),
            "tee-pubkey": dict(self.tee_pubkey),
        }


def tdx_claims(quote: Quote, tcb_status: str, advisory_ids: tuple[str, ...]) -> dict[str, Any]:
    """The `tdx` claims of a verified quote (registers as lowercase hex)."""
    body = quote.body
    attributes = int.from_bytes(body.td_attributes, "little")
    return {
        "tcb_status": tcb_status,
        "advisory_ids": list(advisory_ids),
        "debug": bool(attributes & DEBUG_BIT),
        "mr_td": body.mr_td.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        "rtmr0": body.rtmr0.hex(),
        "rtmr1": body.rtmr1.hex(),
        "rtmr2": body.rtmr2.hex(),
        "rtmr3": body.rtmr3.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
    }


def identity_claims(instance_pubkey: bytes, log: VerifiedLog) -> dict[str, Any]:
    """The `identity` claims: the instance key and what its replayed event log measured (the
    latest operator and owner, SSH host key, workload, each helper role and the settings)."""
    operator = log.identity("operator")
    owner = log.identity("owner")
    workload = log.workload
    config = log.config
    helpers: dict[str, Any] = {}
    for event in log.events:
        if isinstance(event, ExecutableEvent):
            helpers[event.role] = event_to_object(event)
    return {
        "instance_pubkey": instance_pubkey.hex(),
        "operator": None if operator is None else operator.hex(),
        "owner": None if owner is None else owner.hex(),
        "ssh_host_key": log.ssh_host_key,
        "workload": None if workload is None else event_to_object(workload),
        "helpers": helpers,
        "config": {} if config is None else dict(config.settings),
    }


class EvidenceVerifier:
    """Verifies one attest's evidence against its session's nonce."""

    def __init__(self, quotes: QuoteVerifier) -> None:
        self._quotes = quotes

    async def verify(
        self, attestation: Attestation, session_nonce: str, *, now: datetime
    ) -> AttestedClaims:
        runtime = attestation.runtime_data
        if not hmac.compare_digest(runtime.nonce.encode("utf-8"), session_nonce.encode("utf-8")):
            raise NonceMismatch("the runtime data's nonce is not this session's nonce")
        additional = attestation.tee_evidence.additional_evidence
        try:
            identity = IdentityEvidence.decode(additional)
        except MessageError as exc:
            raise IdentityEvidenceRefused(
                f"the additional evidence is not tdx-identity evidence: {exc}"
            ) from None
        try:
            identity.verify_possession(runtime.nonce, runtime.tee_pubkey)
        except MessageError as exc:
            raise IdentityEvidenceRefused(
                f"the instance key's proof of possession does not verify: {exc}"
            ) from None
        raw_quote = attestation.tee_evidence.primary_evidence.quote
        try:
            parsed = parse_quote(raw_quote)
        except (QuoteFormatError, QuoteParseError, ValueError) as exc:
            raise QuoteRefused(f"the quote does not parse: {exc}") from None
        expected = runtime_data_binding(runtime.nonce, runtime.tee_pubkey, additional)
        if not hmac.compare_digest(parsed.body.report_data, expected):
            raise BindingMismatch(
                "the quote's report_data is not the binding of this runtime data and "
                "additional evidence"
            )
        try:
            verified = await self._quotes.verify_quote(raw_quote, now=now)
        except PccsError as exc:
            raise CollateralUnavailable(
                f"could not fetch collateral from the PCCS: {exc}"
            ) from None
        except VerificationError as exc:
            raise QuoteRefused(f"the quote does not verify at {exc.step}: {exc.reason}") from None
        try:
            event_log = EventLog.from_json(identity.event_log)
        except EventLogError as exc:
            raise EventLogRefused(f"the event log does not parse: {exc.reason}") from None
        try:
            replayed = verify_log(event_log, verified.quote.body.rtmr3)
        except ReplayMismatchError as exc:
            raise EventLogRefused(
                f"the event log does not replay to the quote's RTMR3: {exc.reason}"
            ) from None
        return AttestedClaims(
            tdx=tdx_claims(verified.quote, verified.tcb_status, tuple(verified.advisory_ids)),
            identity=identity_claims(identity.instance_pubkey, replayed),
            tee_pubkey=dict(runtime.tee_pubkey.jwk),
        )
