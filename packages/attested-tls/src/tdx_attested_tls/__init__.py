"""Attested TLS certificates for Intel TDX, in the interoperable RA-TLS format (TCG DICE
conceptual message wrapper, X.509 extension 2.23.133.5.4.9, CBOR tag 60000).

In the TD (maker):
    claims = claims_for(spki_der_of(tls_key), instance_key)   # instance_key: Ed25519PrivateKey
    quote = <the TD's quote over report_data_for(claims.encode())>
    cert = build_certificate(tls_key, claims, quote, hostnames=[...], not_before=..., not_after=...)

A client (verifier), before it sends anything:
    async with DcapAppraiser(pccs_url=..., root_ca_pem=...) as dcap:
        context, peer = await attested_ssl_context(host, port, dcap)
        async with httpx.AsyncClient(verify=context) as client: ...
or `httpx.AsyncClient(transport=AttestedTransport(appraise))`.
"""

from tdx_attested_tls._appraise import Appraiser, DcapAppraiser
from tdx_attested_tls._certificate import (
    EVIDENCE_OID,
    AttestedCertificate,
    build_certificate,
    check_validity,
    parse_attested_certificate,
    spki_der_of,
)
from tdx_attested_tls._claims import (
    EVIDENCE_CBOR_TAG,
    INSTANCE_BINDING_DOMAIN,
    INSTANCE_PUBKEY_CLAIM,
    INSTANCE_SIGNATURE_CLAIM,
    NONCE_CLAIM,
    PUBKEY_HASH_CLAIM,
    Claims,
    HashAlg,
    claims_for,
    decode_evidence,
    encode_evidence,
    instance_binding_message,
    report_data_for,
)
from tdx_attested_tls._client import (
    AttestedTransport,
    VerifiedPeer,
    attested_ssl_context,
    fetch_peer_certificate,
    is_pin_mismatch,
    pinned_ssl_context,
    verify_peer,
)
from tdx_attested_tls._errors import (
    AttestedTlsError,
    BindingError,
    CertificateExpired,
    CertificateFormatError,
    CertificateNotYetValid,
    EvidenceRefused,
    PeerUnreachable,
    PinMismatch,
    ValidityError,
)

__all__ = [
    "EVIDENCE_CBOR_TAG",
    "EVIDENCE_OID",
    "INSTANCE_BINDING_DOMAIN",
    "INSTANCE_PUBKEY_CLAIM",
    "INSTANCE_SIGNATURE_CLAIM",
    "NONCE_CLAIM",
    "PUBKEY_HASH_CLAIM",
    "Appraiser",
    "AttestedCertificate",
    "AttestedTlsError",
    "AttestedTransport",
    "BindingError",
    "CertificateExpired",
    "CertificateFormatError",
    "CertificateNotYetValid",
    "Claims",
    "DcapAppraiser",
    "EvidenceRefused",
    "HashAlg",
    "PeerUnreachable",
    "PinMismatch",
    "ValidityError",
    "VerifiedPeer",
    "attested_ssl_context",
    "build_certificate",
    "check_validity",
    "claims_for",
    "decode_evidence",
    "encode_evidence",
    "fetch_peer_certificate",
    "instance_binding_message",
    "is_pin_mismatch",
    "parse_attested_certificate",
    "pinned_ssl_context",
    "report_data_for",
    "spki_der_of",
    "verify_peer",
]
