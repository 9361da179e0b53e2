"""The one exception tree of tdxctl. Every failure a caller can meet is one of these, with a
`reason` that says what to do; the command line prints it and exits 1.

TdxctlError
├── KeyFileError            a key file cannot be created, read or parsed
├── RequestError            a service could not be asked, or did not answer as API.md says
│   ├── ServiceUnreachable  connection refused, timeout, DNS
│   ├── ServiceRefused      a JSON error answer (`status`, the service's own reason)
│   │   └── BrokerRefused   the key broker's Trustee error (`status`, `variant`, `detail`)
│   └── BadAnswer           an answer that is not what the contract defines
├── VerificationFailed      evidence did not verify; `check` names the check that refused it
│   ├── RecordFormatError   the record or attestation answer is malformed
│   ├── QuoteRejected       DCAP verification or the caller's policy refused the quote
│   ├── BindingMismatch     report_data, PPID, instance key or nonce differ from the claim
│   ├── IdentityRejected    an identity's signatures, or the owner-only-with-operator rule
│   ├── EventLogRejected    the event log is malformed, does not replay, or names others
│   ├── HostKeyMismatch     the SSH host key differs between the record, the log, a fresh quote
│   ├── ExpectationFailed   the caller's --expect-operator / --expect-owner does not hold
│   ├── CertificateRejected an attested TLS certificate is malformed, unbound, out of its
│   │                       validity window, or not the one the server presents
│   └── UnknownInstance     the registry has no record of the certificate's instance
└── SshError                OpenSSH could not be run
"""

from __future__ import annotations

__all__ = [
    "BadAnswer",
    "BindingMismatch",
    "BrokerRefused",
    "CertificateRejected",
    "EventLogRejected",
    "ExpectationFailed",
    "HostKeyMismatch",
    "IdentityRejected",
    "KeyFileError",
    "QuoteRejected",
    "RecordFormatError",
    "RequestError",
    "ServiceRefused",
    "ServiceUnreachable",
    "SshError",
    "TdxctlError",
    "UnknownInstance",
    "VerificationFailed",
]


class TdxctlError(Exception):
    """Every tdxctl failure; `reason` is safe to show (it never carries a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(TdxctlError):
    """A key file cannot be created (it exists, the directory is not writable), read or parsed."""


class RequestError(TdxctlError):
    """A request to the identity service or the registry failed."""


class ServiceUnreachable(RequestError):
    """The service could not be reached at all."""


class ServiceRefused(RequestError):
    """The service answered with an error status; `status` and the service's reason."""

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason)
        self.status = status


class BrokerRefused(ServiceRefused):
    """The key broker refused with Trustee's error body: its status, the error variant (the
    last segment of its `type`) and its detail."""

    def __init__(self, reason: str, *, status: int, variant: str, detail: str) -> None:
        super().__init__(reason, status=status)
        self.variant = variant
        self.detail = detail


class BadAnswer(RequestError):
    """The service answered 200 with a body the contract does not define."""


class VerificationFailed(TdxctlError):
    """Evidence did not verify. `check` is the stable name of the refusing check."""

    check = "verification"


class RecordFormatError(VerificationFailed):
    """The registry record or the attestation answer is malformed."""

    check = "format"


class QuoteRejected(VerificationFailed):
    """DCAP verification (with the caller's root and PCCS) or the caller's policy refused the
    quote; `step` is tdx-verify's step name."""

    check = "quote"

    def __init__(self, reason: str, *, step: str) -> None:
        super().__init__(reason)
        self.step = step


class BindingMismatch(VerificationFailed):
    """The quote does not commit to what is claimed: report_data, PPID, instance key, nonce."""

    check = "binding"


class IdentityRejected(VerificationFailed):
    """An identity's two signatures do not check out, or an owner comes without an operator."""

    check = "identity"


class EventLogRejected(VerificationFailed):
    """The RTMR3 event log is missing or malformed, does not replay to the quote's RTMR3, or
    does not name the record's operator and owner."""

    check = "event_log"


class HostKeyMismatch(VerificationFailed):
    """The SSH host key of the record, its verified log and a fresh attestation disagree, or
    none is measured."""

    check = "ssh_host_key"


class ExpectationFailed(VerificationFailed):
    """The record's operator or owner is not the one the caller expects."""

    check = "expectation"


class CertificateRejected(VerificationFailed):
    """An attested TLS certificate has no or malformed evidence, does not bind its key, is
    outside its validity window, or the server switched to another one after verification."""

    check = "certificate"


class UnknownInstance(VerificationFailed):
    """The registry holds no record of the instance a certificate names."""

    check = "registry"


class SshError(TdxctlError):
    """The OpenSSH client could not be run (not installed, not executable)."""
