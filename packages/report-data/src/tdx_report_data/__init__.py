"""Bind an instance key, its PPID and its operator/owner identities into a TDX report_data.

The encoding (version 1) is the byte string

    DOMAIN || field(0x01, instance_pubkey) || field(0x02, ppid)
           || identity(0x03, operator) || identity(0x04, owner)

with ``DOMAIN = b"tdx-identity/report-data/v1\\x00"``,
``field(tag, v) = tag (1 byte) || len(v) (4 bytes, big-endian) || v``,
``identity(tag, None) = tag || 0x00`` and
``identity(tag, i) = tag || 0x01 || field(0x10, i.pubkey) || field(0x11, i.instance_signature)
|| field(0x12, i.identity_signature)``.
Fields come in a fixed order, each tagged and length-prefixed, so the encoding is injective; the
report_data is ``SHA-512(encoding)`` (64 bytes, the size of the TD report's report_data).

A fresh answer to a verifier's challenge (`challenge_report_data`) binds the instance key and a
16-to-64-byte nonce under its own domain tag:
``CHALLENGE_DOMAIN || field(0x01, instance_pubkey) || field(0x05, nonce)`` with
``CHALLENGE_DOMAIN = b"tdx-identity/challenge/v1\\x00"``. Neither domain tag is a prefix of the
other, so a challenge answer never passes as a registration binding, nor the reverse.

Version 2 (README, "Version 2") adds a registration binding that covers the registry's
single-use challenge (`report_data_for_v2`), the instance key's proof of possession over the
challenge and the report_data (`prove_possession`, `verify_possession`), and identity signatures
that name their role and what they sign (`sign_instance_v2`, `sign_identity_v2`,
`verify_identity_v2`), each under its own domain tag.
"""

from tdx_report_data._binding import (
    CHALLENGE_DOMAIN,
    DOMAIN,
    ED25519_PUBKEY_LEN,
    ED25519_SIGNATURE_LEN,
    MAX_NONCE_LEN,
    MAX_PPID_LEN,
    MIN_NONCE_LEN,
    REPORT_DATA_LEN,
    EncodingError,
    IdentityFormatError,
    IdentityInfo,
    ReportDataError,
    SignatureError,
    SmallOrderKeyError,
    challenge_report_data,
    encode_binding,
    encode_challenge,
    reject_small_order_key,
    report_data_for,
    sign_identity,
    verify_identity,
)
from tdx_report_data._v2 import (
    IDENTITY_OVER_INSTANCE_DOMAIN_V2,
    INSTANCE_OVER_IDENTITY_DOMAIN_V2,
    POSSESSION_DOMAIN_V2,
    REGISTRATION_DOMAIN_V2,
    Role,
    encode_binding_v2,
    identity_over_instance_message,
    instance_over_identity_message,
    possession_message,
    prove_possession,
    report_data_for_v2,
    sign_identity_v2,
    sign_instance_v2,
    verify_identity_v2,
    verify_possession,
)

__all__ = [
    "CHALLENGE_DOMAIN",
    "DOMAIN",
    "ED25519_PUBKEY_LEN",
    "ED25519_SIGNATURE_LEN",
    "IDENTITY_OVER_INSTANCE_DOMAIN_V2",
    "INSTANCE_OVER_IDENTITY_DOMAIN_V2",
    "MAX_NONCE_LEN",
    "MAX_PPID_LEN",
    "MIN_NONCE_LEN",
    "POSSESSION_DOMAIN_V2",
    "REGISTRATION_DOMAIN_V2",
    "REPORT_DATA_LEN",
    "EncodingError",
    "IdentityFormatError",
    "IdentityInfo",
    "ReportDataError",
    "Role",
    "SignatureError",
    "SmallOrderKeyError",
    "challenge_report_data",
    "encode_binding",
    "encode_binding_v2",
    "encode_challenge",
    "identity_over_instance_message",
    "instance_over_identity_message",
    "possession_message",
    "prove_possession",
    "reject_small_order_key",
    "report_data_for",
    "report_data_for_v2",
    "sign_identity",
    "sign_identity_v2",
    "sign_instance_v2",
    "verify_identity",
    "verify_identity_v2",
    "verify_possession",
]
