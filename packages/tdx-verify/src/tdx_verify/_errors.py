"""One exception hierarchy for everything this library refuses.

Every verification failure is a `VerificationError` that names the DCAP step that failed
(`step`) and why (`reason`), so a caller can log or return it without guessing.
"""

from __future__ import annotations


class TdxVerifyError(Exception):
    """Base of every error raised by tdx_verify."""


class VerificationError(TdxVerifyError, ValueError):
    """A quote or its collateral did not verify. `step` names the DCAP step, `reason` says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class QuoteParseError(VerificationError):
    """The quote bytes are malformed, or of a kind this verifier does not accept."""


class CollateralFormatError(VerificationError):
    """A collateral item is not well formed (bad JSON, hex, PEM, DER or field)."""


class RootCaError(VerificationError):
    """The pinned root CA is unusable, or a chain does not end at it."""


class CrlError(VerificationError):
    """A CRL is malformed, not signed by its issuer, or does not cover the certificate."""


class RevokedError(VerificationError):
    """A certificate on a chain is listed in a CRL."""


class CollateralSignatureError(VerificationError):
    """A signed collateral item (TCB info, QE identity, CRL) or its issuer chain does not verify."""


class CollateralExpiredError(VerificationError):
    """A collateral item or issuer certificate is outside its validity window at `now`."""


class CollateralMismatchError(VerificationError):
    """Valid collateral that is for another kind of platform (FMSPC, PCE-ID, TEE type)."""


class PckChainError(VerificationError):
    """The PCK certificate chain carried in the quote does not verify."""


class QeReportError(VerificationError):
    """The QE report is not signed by the PCK key or does not bind the attestation key."""


class QeIdentityError(VerificationError):
    """The QE report does not match the QE identity from the collateral."""


class QuoteSignatureError(VerificationError):
    """The quote is not signed by the attestation key."""


class TcbLevelError(VerificationError):
    """The platform's TCB matches no level of the TCB info (or the TDX module is unknown)."""


class PolicyError(VerificationError):
    """The quote verified but the caller's policy refuses it."""


class TcbStatusRejected(PolicyError):
    """The merged TCB status is not one the policy accepts."""

    def __init__(self, step: str, reason: str, *, tcb_status: str, advisory_ids: tuple[str, ...]):
        super().__init__(step, reason)
        self.tcb_status = tcb_status
        self.advisory_ids = advisory_ids


class AdvisoryDenied(PolicyError):
    """The verdict names a security advisory the policy denies (`Policy.denied_advisory_ids`),
    whatever its TCB status; `denied` lists those advisories."""

    def __init__(
        self,
        step: str,
        reason: str,
        *,
        tcb_status: str,
        advisory_ids: tuple[str, ...],
        denied: tuple[str, ...],
    ):
        super().__init__(step, reason)
        self.tcb_status = tcb_status
        self.advisory_ids = advisory_ids
        self.denied = denied


class DebugTdRejected(PolicyError):
    """The TD runs in debug mode and the policy does not allow debug TDs."""


class TdAttributesRejected(PolicyError):
    """The TD attributes have reserved bits set, or SEPT_VE_DISABLE is off."""


class MeasurementRejected(PolicyError):
    """MRTD or an RTMR is not in the policy's allow-list."""


class PccsError(TdxVerifyError):
    """Fetching collateral from the PCCS failed (network, status, size, format)."""


class CollateralRollback(PccsError):
    """The PCCS answered collateral older than what this cache has already verified for the
    same platform kind (a lower tcbEvaluationDataNumber or CRL number): a replayed answer could
    hide a revocation or a TCB recovery, so it is refused and the newer copy kept. `item` names
    the piece, `seen` the number already verified, `got` the answer's (None: it has none)."""

    def __init__(self, reason: str, *, item: str, seen: int, got: int | None) -> None:
        super().__init__(reason)
        self.item = item
        self.seen = seen
        self.got = got
