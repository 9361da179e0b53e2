"""Appraisal: what decides whether a parsed certificate's evidence is acceptable. The caller
supplies it as an async callable `(AttestedCertificate) -> T`; it raises (ideally
`EvidenceRefused`) to refuse, and its result is handed back in `VerifiedPeer.appraisal`.
`DcapAppraiser` is the ready-made DCAP step; compose it with checks of your own (a registry
record, an expected MRTD or instance key)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeAlias, TypeVar

import httpx

from tdx_attested_tls._certificate import AttestedCertificate
from tdx_attested_tls._claims import report_data_for
from tdx_attested_tls._errors import EvidenceRefused
from tdx_verify import (
    CollateralCache,
    PccsClient,
    PccsError,
    Policy,
    TdxVerifyError,
    VerificationError,
    VerifiedQuote,
    Verifier,
)

__all__ = ["Appraiser", "DcapAppraiser"]

T = TypeVar("T")
Appraiser: TypeAlias = Callable[[AttestedCertificate], Awaitable[T]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DcapAppraiser:
    """Full DCAP verification of the certificate's quote with the caller's root CA (None:
    Intel's SGX Root CA), PCCS and policy, or with the caller's own tdx_verify `verifier`
    (then `root_ca_pem` and `policy` must be None); returns the `VerifiedQuote`. Use as
    `async with` (it owns its PCCS client)."""

    def __init__(
        self,
        *,
        pccs_url: str,
        root_ca_pem: bytes | None = None,
        policy: Policy | None = None,
        verifier: Verifier | None = None,
        clock: Callable[[], datetime] = _utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if verifier is not None and (root_ca_pem is not None or policy is not None):
            raise ValueError("give either a Verifier or its root_ca_pem and policy, not both")
        if verifier is None:
            verifier = Verifier(root_ca_pem=root_ca_pem, policy=policy or Policy())
        self._pccs = PccsClient(pccs_url, transport=transport)
        self._cache = CollateralCache(self._pccs, verifier)
        self._clock = clock

    async def __aenter__(self) -> DcapAppraiser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pccs.aclose()

    async def __call__(self, certificate: AttestedCertificate) -> VerifiedQuote:
        """The certificate's quote verified; `EvidenceRefused` (step = tdx-verify's step)
        otherwise. The verified report_data is checked against the claims once more."""
        try:
            verified = await self._cache.verify_quote(certificate.quote, now=self._clock())
        except VerificationError as exc:
            raise EvidenceRefused(
                f"the quote does not verify at step {exc.step}: {exc.reason}", step=exc.step
            ) from None
        except PccsError as exc:
            raise EvidenceRefused(
                f"collateral could not be fetched from the PCCS: {exc}", step="collateral"
            ) from None
        except (TdxVerifyError, ValueError) as exc:
            raise EvidenceRefused(f"the quote does not verify: {exc}", step="quote") from None
        if not hmac.compare_digest(
            verified.report_data, report_data_for(certificate.claims_buffer)
        ):
            raise EvidenceRefused(
                "the verified quote's report_data does not commit to the claims", step="binding"
            )
        return verified
