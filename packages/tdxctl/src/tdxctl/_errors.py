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
│   ├── UnknownInstance     the registry has no record of the certificate's instance
│   ├── RegistryRefusedRecord  the registry's own re-appraisal refused the record
│   │                       (`verification.refused`), even if it verified here
│   └── LogAuditFailed      the registry's log does not vouch for the record (`registry audit`)
│       ├── LogKeyRejected       the log key served differs from the pinned or remembered one
│       ├── CheckpointRejected   the checkpoint's note or its body does not verify
│       ├── LogEntryRejected     a leaf's hash, encoding or content is wrong
│       ├── RecordNotLogged      the record differs from its leaf, or a later leaf hides it
│       ├── InclusionRejected    the inclusion proof does not lead to the checkpoint's root
│       └── ConsistencyRejected  the log is not an extension of the remembered checkpoint
├── AuditStateError         the audit state file cannot be read, parsed or written
└── SshError                OpenSSH could not be run
"""

from __future__ import annotations

__all__ = [
    "AuditStateError",
    "BadAnswer",
    "BindingMismatch",
    "BrokerRefused",
    "CertificateRejected",
    "CheckpointRejected",
    "ConsistencyRejected",
    "EventLogRejected",
    "ExpectationFailed",
    "HostKeyMismatch",
    "IdentityRejected",
    "InclusionRejected",
    "KeyFileError",
    "LogAuditFailed",
    "LogEntryRejected",
    "LogKeyRejected",
    "QuoteRejected",
    "RecordFormatError",
    "RecordNotLogged",
    "RegistryRefusedRecord",
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


class RegistryRefusedRecord(VerificationFailed):
    """The record verified with the caller's trust, but the registry's own verdict on it is a
    refusal (`verification.refused`, e.g. from a re-appraisal with current collateral or a
    stricter policy). `refused` is the registry's reason, printable. Only a refusal is taken
    from the registry's word: it can make tdxctl refuse, never accept."""

    check = "registry_verdict"

    def __init__(self, refused: str) -> None:
        super().__init__(
            f"the registry refused this record: {refused} (its own verdict, "
            "verification.refused; --accept-registry-refusal relies on this verification only)"
        )
        self.refused = refused


class LogAuditFailed(VerificationFailed):
    """The registry's Merkle log does not vouch for the instance's record (`registry audit`)."""

    check = "log"


class LogKeyRejected(LogAuditFailed):
    """The registry serves a log key other than the pinned or remembered one, or a malformed
    one."""

    check = "log_key"


class CheckpointRejected(LogAuditFailed):
    """The checkpoint's signed note does not open with the log key, or its body is malformed or
    names another origin."""

    check = "checkpoint"


class LogEntryRejected(LogAuditFailed):
    """A leaf's hash is not the hash of its entry, or the entry is not canonical leaf JSON, or it
    names another instance."""

    check = "log_entry"


class RecordNotLogged(LogAuditFailed):
    """The registry's record differs from its log leaf, or a later leaf of the instance shows that
    the registry serves a stale record."""

    check = "log_record"


class InclusionRejected(LogAuditFailed):
    """The record's leaf (or the leaves after it) do not lead to the checkpoint's root."""

    check = "inclusion"


class ConsistencyRejected(LogAuditFailed):
    """The log is not an append-only extension of the checkpoint remembered in the state file:
    another root at the same size, a consistency proof that does not verify, or a log that
    shrank."""

    check = "consistency"


class AuditStateError(TdxctlError):
    """The audit state file cannot be read, does not parse, or cannot be written."""


class SshError(TdxctlError):
    """The OpenSSH client could not be run (not installed, not executable)."""
