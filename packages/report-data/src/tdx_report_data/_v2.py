"""Version 2: a registration binding that covers the registry's challenge, the instance key's
proof of possession, and identity signatures that name their role and context."""

from __future__ import annotations

import hashlib
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_report_data._binding import (
    _TAG_INSTANCE,
    _TAG_OPERATOR,
    _TAG_OWNER,
    _TAG_PPID,
    ED25519_PUBKEY_LEN,
    ED25519_SIGNATURE_LEN,
    MAX_NONCE_LEN,
    MIN_NONCE_LEN,
    REPORT_DATA_LEN,
    EncodingError,
    IdentityInfo,
    _check_len,
    _check_registration,
    _field,
    _identity,
    _verify,
)

Role = Literal["operator", "owner"]

REGISTRATION_DOMAIN_V2 = b"tdx-identity/report-data/v2\x00"
POSSESSION_DOMAIN_V2 = b"tdx-identity/proof-of-possession/v2\x00"
IDENTITY_OVER_INSTANCE_DOMAIN_V2 = b"tdx-identity/identity-signs-instance/v2\x00"
INSTANCE_OVER_IDENTITY_DOMAIN_V2 = b"tdx-identity/instance-signs-identity/v2\x00"

_TAG_CHALLENGE = 0x06
_TAG_REPORT_DATA = 0x07
_TAG_ID_PUBKEY = 0x10
_TAG_ROLE = 0x20
_ROLES: tuple[Role, ...] = ("operator", "owner")


def _check_challenge(challenge: bytes) -> None:
    if not isinstance(challenge, bytes) or not MIN_NONCE_LEN <= len(challenge) <= MAX_NONCE_LEN:
        raise EncodingError(f"challenge must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes")


def _role(role: Role) -> bytes:
    if role not in _ROLES:
        raise EncodingError(f"role must be 'operator' or 'owner', not {role!r}")
    return _field(_TAG_ROLE, role.encode("ascii"))


def encode_binding_v2(
    instance_pubkey: bytes,
    ppid: bytes,
    challenge: bytes,
    operator: IdentityInfo | None,
    owner: IdentityInfo | None,
) -> bytes:
    """``REGISTRATION_DOMAIN_V2 || field(0x01, instance_pubkey) || field(0x02, ppid) ||
    field(0x06, challenge) || identity(0x03, operator) || identity(0x04, owner)``: version 1's
    fields in version 1's order, the registry's single-use challenge after the PPID."""
    _check_registration(instance_pubkey, ppid, operator, owner)
    _check_challenge(challenge)
    return (
        REGISTRATION_DOMAIN_V2
        + _field(_TAG_INSTANCE, instance_pubkey)
        + _field(_TAG_PPID, ppid)
        + _field(_TAG_CHALLENGE, challenge)
        + _identity(_TAG_OPERATOR, "operator", operator)
        + _identity(_TAG_OWNER, "owner", owner)
    )


def report_data_for_v2(
    instance_pubkey: bytes,
    ppid: bytes,
    challenge: bytes,
    operator: IdentityInfo | None,
    owner: IdentityInfo | None,
) -> bytes:
    """The 64-byte report_data of a version-2 registration: SHA-512 of `encode_binding_v2`."""
    encoding = encode_binding_v2(instance_pubkey, ppid, challenge, operator, owner)
    return hashlib.sha512(encoding).digest()


def possession_message(challenge: bytes, report_data: bytes) -> bytes:
    """What the instance key signs to prove, at this registration, that the TD holds it:
    ``POSSESSION_DOMAIN_V2 || field(0x06, challenge) || field(0x07, report_data)``."""
    _check_challenge(challenge)
    _check_len("report_data", report_data, REPORT_DATA_LEN)
    return (
        POSSESSION_DOMAIN_V2
        + _field(_TAG_CHALLENGE, challenge)
        + _field(_TAG_REPORT_DATA, report_data)
    )


def prove_possession(
    instance_key: Ed25519PrivateKey, challenge: bytes, report_data: bytes
) -> bytes:
    """The instance key's signature over `possession_message(challenge, report_data)`."""
    return instance_key.sign(possession_message(challenge, report_data))


def verify_possession(
    instance_pubkey: bytes, challenge: bytes, report_data: bytes, signature: bytes
) -> None:
    """Raise SignatureError unless `signature` is the instance key's proof of possession."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    _check_len("instance_signature", signature, ED25519_SIGNATURE_LEN)
    _verify(
        instance_pubkey,
        signature,
        possession_message(challenge, report_data),
        "the instance key's proof of possession",
    )


def identity_over_instance_message(role: Role, instance_pubkey: bytes) -> bytes:
    """What an operator or owner key signs to accept an instance (`IdentityInfo.
    instance_signature` in v2): ``IDENTITY_OVER_INSTANCE_DOMAIN_V2 || field(0x20, role) ||
    field(0x01, instance_pubkey)``."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    return IDENTITY_OVER_INSTANCE_DOMAIN_V2 + _role(role) + _field(_TAG_INSTANCE, instance_pubkey)


def instance_over_identity_message(role: Role, identity_pubkey: bytes) -> bytes:
    """What the instance key signs to accept an operator or owner (`IdentityInfo.
    identity_signature` in v2): ``INSTANCE_OVER_IDENTITY_DOMAIN_V2 || field(0x20, role) ||
    field(0x10, identity_pubkey)``."""
    _check_len("pubkey", identity_pubkey, ED25519_PUBKEY_LEN)
    return INSTANCE_OVER_IDENTITY_DOMAIN_V2 + _role(role) + _field(_TAG_ID_PUBKEY, identity_pubkey)


def sign_instance_v2(identity_key: Ed25519PrivateKey, role: Role, instance_pubkey: bytes) -> bytes:
    """An operator's or owner's v2 signature accepting `instance_pubkey` in `role`."""
    return identity_key.sign(identity_over_instance_message(role, instance_pubkey))


def verify_identity_v2(instance_pubkey: bytes, role: Role, identity: IdentityInfo) -> None:
    """Check both v2 signatures of `identity` in `role` against `instance_pubkey`; raise
    SignatureError (SmallOrderKeyError when either key is a small-order point)."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    _check_len("pubkey", identity.pubkey, ED25519_PUBKEY_LEN)
    _check_len("instance_signature", identity.instance_signature, ED25519_SIGNATURE_LEN)
    _check_len("identity_signature", identity.identity_signature, ED25519_SIGNATURE_LEN)
    _verify(
        identity.pubkey,
        identity.instance_signature,
        identity_over_instance_message(role, instance_pubkey),
        f"the {role} key's v2 signature over the instance key",
    )
    _verify(
        instance_pubkey,
        identity.identity_signature,
        instance_over_identity_message(role, identity.pubkey),
        f"the instance key's v2 signature over the {role} key",
    )


def sign_identity_v2(
    instance_key: Ed25519PrivateKey, role: Role, identity_pubkey: bytes, instance_signature: bytes
) -> IdentityInfo:
    """Counter-sign an identity in `role` with the instance key (v2), after checking the
    identity's own v2 signature over the instance key."""
    _check_len("pubkey", identity_pubkey, ED25519_PUBKEY_LEN)
    instance_pubkey = instance_key.public_key().public_bytes_raw()
    info = IdentityInfo(
        pubkey=identity_pubkey,
        instance_signature=instance_signature,
        identity_signature=instance_key.sign(instance_over_identity_message(role, identity_pubkey)),
    )
    verify_identity_v2(instance_pubkey, role, info)
    return info
