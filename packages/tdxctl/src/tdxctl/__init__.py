"""The operator's and owner's client of a TDX identity service: verifies before it trusts.

async with IdentityClient(url) as identity, QuoteVerifier(TrustSettings(root_pem)) as qv:
    registration = await register_operator(identity, operator_key, qv)   # verified first
async with RegistryClient(url) as registry, QuoteVerifier(TrustSettings()) as qv:
    record = await registry.record(pk)
    facts = await verify_record(record, instance_pubkey=pk, verifier=qv)
    check_registry_verdict(record)   # the registry's own refusal refuses too (opt-out: accept)
    # an attested TLS front: its certificate verified (and its record) before anything is sent
    result = await attested_get(GetTarget.parse(url), RegistryAppraiser(registry, qv))
async with LogClient(url) as log:   # the registry's Merkle log vouches for the record
    audit = await audit_instance(log, pk, previous=load_audit_state(path), pinned_key=None)
    write_audit_state(path, audit.state)
"""

from tdxctl._audit import (
    AuditResult,
    AuditState,
    LogClient,
    audit_instance,
    audited_state,
    load_audit_state,
    write_audit_state,
)
from tdxctl._clients import (
    AttestationAnswer,
    IdentityClient,
    InstanceState,
    RegistryClient,
    RegistryRecord,
)
from tdxctl._errors import (
    AuditStateError,
    BadAnswer,
    BindingMismatch,
    BrokerRefused,
    CertificateRejected,
    CheckpointRejected,
    ConsistencyRejected,
    EventLogRejected,
    ExpectationFailed,
    HostKeyMismatch,
    IdentityRejected,
    InclusionRejected,
    KeyFileError,
    LogAuditFailed,
    LogEntryRejected,
    LogKeyRejected,
    QuoteRejected,
    RecordFormatError,
    RecordNotLogged,
    RegistryRefusedRecord,
    RequestError,
    ServiceRefused,
    ServiceUnreachable,
    SshError,
    TdxctlError,
    UnknownInstance,
    VerificationFailed,
)
from tdxctl._flows import (
    OperatorRegistration,
    OwnerRegistration,
    SshTarget,
    attested_ssh_target,
    fresh_attestation,
    register_operator,
    register_owner,
)
from tdxctl._get import GetResult, GetTarget, PeerFacts, RegistryAppraiser, attested_get
from tdxctl._kbs import KbsAdmin
from tdxctl._keys import generate_key_file, load_private_key, public_key_bytes
from tdxctl._ssh import DEFAULT_SSH_PORT, known_hosts_line, run_pinned_ssh, ssh_argv
from tdxctl._verify import (
    INTEL_PCS_URL,
    QuoteVerifier,
    TrustSettings,
    VerifiedFacts,
    check_registry_verdict,
    verify_attestation,
    verify_record,
)

__all__ = [
    "DEFAULT_SSH_PORT",
    "INTEL_PCS_URL",
    "AttestationAnswer",
    "AuditResult",
    "AuditState",
    "AuditStateError",
    "BadAnswer",
    "BindingMismatch",
    "BrokerRefused",
    "CertificateRejected",
    "CheckpointRejected",
    "ConsistencyRejected",
    "EventLogRejected",
    "ExpectationFailed",
    "GetResult",
    "GetTarget",
    "HostKeyMismatch",
    "IdentityClient",
    "IdentityRejected",
    "InclusionRejected",
    "InstanceState",
    "KbsAdmin",
    "KeyFileError",
    "LogAuditFailed",
    "LogClient",
    "LogEntryRejected",
    "LogKeyRejected",
    "OperatorRegistration",
    "OwnerRegistration",
    "PeerFacts",
    "QuoteRejected",
    "QuoteVerifier",
    "RecordFormatError",
    "RecordNotLogged",
    "RegistryAppraiser",
    "RegistryClient",
    "RegistryRecord",
    "RegistryRefusedRecord",
    "RequestError",
    "ServiceRefused",
    "ServiceUnreachable",
    "SshError",
    "SshTarget",
    "TdxctlError",
    "TrustSettings",
    "UnknownInstance",
    "VerificationFailed",
    "VerifiedFacts",
    "attested_get",
    "attested_ssh_target",
    "audit_instance",
    "audited_state",
    "check_registry_verdict",
    "fresh_attestation",
    "generate_key_file",
    "known_hosts_line",
    "load_audit_state",
    "load_private_key",
    "public_key_bytes",
    "register_operator",
    "register_owner",
    "run_pinned_ssh",
    "ssh_argv",
    "verify_attestation",
    "verify_record",
    "write_audit_state",
]
