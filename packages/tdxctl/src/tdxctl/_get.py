"""`tdxctl get`: an HTTPS GET to an attested TD's TLS front, sent only after its certificate
verified (tdx-attested-tls) under the caller's own trust:

(1) the certificate parses, carries the evidence extension, its claims bind its key and name
an instance key whose signature over the claims' pubkey-hash verifies (the TD holding the
registered instance key made this TLS key's claims), and the quote commits to the claims; it
is within its validity window;
(2) full DCAP of the certificate's quote with the caller's root, PCCS and policy (TCB status,
debug TD refused unless the caller's flags allow them);
(3) the registry holds a record of the claimed instance and it verifies as `tdxctl verify`
verifies it (v2 binding, identities, DCAP under the same policy, event log, expected
operator/owner);
(4) the certificate's quote comes from the same platform (PPID), the same TD image (MRTD) and
the same boot chain (RTMR0: firmware and TD configuration, RTMR1: kernel and boot loader,
RTMR2: kernel command line and initrd) as the record's. RTMR3 is not compared: the TD extends
it at run time, after its registration;
(5) the registry's own verdict on the record is not a refusal (`verification.refused`), unless
the caller accepts one (`accept_registry_refusal`: then it is kept in `PeerFacts`).
The request then goes over a TLS context that trusts exactly the verified certificate."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from tdx_attested_tls import (
    AttestedCertificate,
    AttestedTlsError,
    AttestedTransport,
    PeerUnreachable,
    VerifiedPeer,
)
from tdx_verify import VerifiedQuote
from tdxctl._clients import RegistryClient, printable
from tdxctl._errors import (
    BindingMismatch,
    CertificateRejected,
    QuoteRejected,
    ServiceRefused,
    ServiceUnreachable,
    UnknownInstance,
)
from tdxctl._verify import QuoteVerifier, VerifiedFacts, check_registry_verdict, verify_record

__all__ = ["GetResult", "GetTarget", "PeerFacts", "RegistryAppraiser", "attested_get"]

DEFAULT_GET_TIMEOUT = 10.0
MAX_BODY = 64 * 1024 * 1024


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class GetTarget:
    """An https URL and the origin it names."""

    url: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> GetTarget:
        """`ValueError` unless `url` is https://HOST[:PORT]/... with no user info."""
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError as exc:
            raise ValueError(f"{url!r} is not a URL: {exc}") from None
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{url!r} is not an https:// URL (the front's TLS port)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the URL must not carry user credentials")
        return cls(url=url, host=parts.hostname, port=port)


@dataclass(frozen=True)
class PeerFacts:
    """What the appraisal established: the instance's verified registry record and the
    certificate's verified quote; `registry_refused` the registry's own refusal of the record
    when the caller accepted one (None: the registry did not refuse it)."""

    record: VerifiedFacts
    certificate_quote: VerifiedQuote
    registry_refused: str | None = None

    def to_object(self) -> dict[str, Any]:
        quote = self.certificate_quote
        return {
            "registry_refused": self.registry_refused,
            "record": self.record.to_object(),
            "certificate_quote": {
                "tcb_status": quote.tcb_status,
                "advisory_ids": list(quote.advisory_ids),
                "mr_td": quote.mr_td.hex(),
                "ppid": quote.ppid.value.hex(),
                "rtmr0": quote.quote.body.rtmr0.hex(),
                "rtmr1": quote.quote.body.rtmr1.hex(),
                "rtmr2": quote.quote.body.rtmr2.hex(),
                "rtmr3": quote.quote.body.rtmr3.hex(),
                "verified_at": quote.verified_at.isoformat(),
            },
        }


class RegistryAppraiser:
    """Checks (2) to (4) of the module docstring on a parsed certificate; raises a tdxctl
    `VerificationFailed` (or a `RequestError` when the registry cannot be asked)."""

    def __init__(
        self,
        registry: RegistryClient,
        verifier: QuoteVerifier,
        *,
        expect_operator: bytes | None = None,
        expect_owner: bytes | None = None,
        accept_v1: bool = False,
        accept_registry_refusal: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._accept_registry_refusal = accept_registry_refusal
        self._registry = registry
        self._verifier = verifier
        self._expect_operator = expect_operator
        self._expect_owner = expect_owner
        self._accept_v1 = accept_v1
        self._clock = clock

    async def __call__(self, certificate: AttestedCertificate) -> PeerFacts:
        instance = certificate.instance_pubkey
        if instance is None:
            raise CertificateRejected(
                'the certificate\'s claims name no instance ("tdx-instance-pubkey"): it does '
                "not come from a tdx-identity TD"
            )
        # (2) DCAP of the certificate's own quote.
        try:
            verified = await self._verifier.verify(certificate.quote, now=self._clock())
        except QuoteRejected as exc:
            raise QuoteRejected(f"the certificate's quote: {exc.reason}", step=exc.step) from None
        # (3) The registry's record of the claimed instance, verified independently.
        try:
            record = await self._registry.record(instance)
        except ServiceRefused as exc:
            if exc.status == 404:
                raise UnknownInstance(
                    f"the registry has no record of the certificate's instance {instance.hex()}"
                ) from None
            raise
        try:
            facts = await verify_record(
                record,
                instance_pubkey=instance,
                verifier=self._verifier,
                expect_operator=self._expect_operator,
                expect_owner=self._expect_owner,
                accept_v1=self._accept_v1,
                clock=self._clock,
            )
        except QuoteRejected as exc:
            raise QuoteRejected(
                f"the registry record's quote: {exc.reason}", step=exc.step
            ) from None
        # (4) The same platform and the same TD image as the registered instance.
        if not hmac.compare_digest(verified.ppid.value, facts.ppid):
            raise BindingMismatch(
                "the certificate's quote comes from another platform (PPID) than the record's"
            )
        if not hmac.compare_digest(verified.mr_td, facts.mr_td):
            raise BindingMismatch("the certificate's quote has another MRTD than the record's")
        body = verified.quote.body
        for name, ours, theirs in (
            ("RTMR0", body.rtmr0, facts.rtmr0),
            ("RTMR1", body.rtmr1, facts.rtmr1),
            ("RTMR2", body.rtmr2, facts.rtmr2),
        ):
            if not hmac.compare_digest(ours, theirs):
                raise BindingMismatch(
                    f"the certificate's quote has another {name} than the record's: "
                    "another boot chain than the registered TD's"
                )
        # (5) The registry's own verdict: a refusal refuses, unless the caller accepts it.
        refused = check_registry_verdict(record, accept_refusal=self._accept_registry_refusal)
        return PeerFacts(record=facts, certificate_quote=verified, registry_refused=refused)


@dataclass(frozen=True)
class GetResult:
    """The answer, and the peer it came from."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: VerifiedPeer[PeerFacts]


def _certificate_error(exc: AttestedTlsError, target: GetTarget) -> Exception:
    if isinstance(exc, PeerUnreachable):
        return ServiceUnreachable(f"cannot reach {target.host}:{target.port}: {exc.reason}")
    return CertificateRejected(f"{target.host}:{target.port}: {exc.reason}")


async def attested_get(
    target: GetTarget,
    appraiser: RegistryAppraiser,
    *,
    timeout: float = DEFAULT_GET_TIMEOUT,  # noqa: ASYNC109 (httpx's and the probe's)
) -> GetResult:
    """Verify `target`'s origin with `appraiser`, then GET it over the pinned context."""
    attested = AttestedTransport(appraiser, timeout=timeout)
    try:
        async with httpx.AsyncClient(transport=attested, timeout=timeout) as client:
            async with client.stream("GET", target.url) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise ServiceUnreachable(
                            f"the answer exceeds {MAX_BODY} bytes; refusing to buffer more"
                        )
            peer = attested.peers.get((target.host, target.port))
    except AttestedTlsError as exc:
        raise _certificate_error(exc, target) from None
    except httpx.TimeoutException:
        raise ServiceUnreachable(f"{target.host}:{target.port} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(
            f"the request to {target.host}:{target.port} failed: "
            f"{printable(str(exc)) or type(exc).__name__}"
        ) from None
    if peer is None:  # the transport verified before it sent; it keeps the peer until closed
        raise CertificateRejected("the verified peer was lost before the answer was read")
    return GetResult(
        status=response.status_code,
        headers=tuple((k, v) for k, v in response.headers.multi_items()),
        body=bytes(body),
        peer=peer,
    )
