"""The one exception tree of tdx_attested_tls. Every refusal names its reason (`reason`), safe
to show: it never carries a secret.

AttestedTlsError
├── CertificateFormatError  not a certificate, no evidence extension, a critical one, bad CBOR,
│                           wrong tag or structure, an unparsable quote, a bad self-signature
├── BindingError            the claims do not bind the certificate's key, an instance claim
│                           has no or a wrong instance-key signature, or the quote's
│                           report_data is not SHA-256(claims-buffer) zero-padded
├── ValidityError           outside notBefore..notAfter
│   ├── CertificateExpired
│   └── CertificateNotYetValid
├── EvidenceRefused         the appraiser (DCAP, registry, policy) said no; `step` names why
├── PeerUnreachable         the TLS peer could not be reached or did not complete a handshake
└── PinMismatch             the peer presented another certificate than the one verified
"""

from __future__ import annotations

__all__ = [
    "AttestedTlsError",
    "BindingError",
    "CertificateExpired",
    "CertificateFormatError",
    "CertificateNotYetValid",
    "EvidenceRefused",
    "PeerUnreachable",
    "PinMismatch",
    "ValidityError",
]


class AttestedTlsError(Exception):
    """Base of everything tdx_attested_tls refuses; `reason` says what went wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateFormatError(AttestedTlsError):
    """The certificate or its evidence extension is malformed, absent or critical."""


class BindingError(AttestedTlsError):
    """The claims do not bind the certificate's SubjectPublicKeyInfo, their instance claim
    lacks the instance key's valid signature over it, or the quote does not commit to the
    claims."""


class ValidityError(AttestedTlsError):
    """The certificate is not valid at the time of the check."""


class CertificateExpired(ValidityError):
    """`now` is after the certificate's notAfter."""


class CertificateNotYetValid(ValidityError):
    """`now` is before the certificate's notBefore."""


class EvidenceRefused(AttestedTlsError):
    """The appraisal refused the evidence (quote verification, policy, registry record).
    `step` is a short stable name of the refusing check."""

    def __init__(self, reason: str, *, step: str = "appraisal") -> None:
        super().__init__(reason)
        self.step = step


class PeerUnreachable(AttestedTlsError):
    """The peer could not be connected to, timed out, or failed the TLS handshake."""


class PinMismatch(AttestedTlsError):
    """On the real connection the peer presented a certificate other than the verified one
    (the handshake failed: nothing was sent)."""
