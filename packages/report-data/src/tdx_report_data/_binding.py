"""The encoding and the signature checks behind `tdx_report_data`."""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"tdx-identity/report-data/v1\x00"
CHALLENGE_DOMAIN = b"tdx-identity/challenge/v1\x00"
REPORT_DATA_LEN = 64
ED25519_PUBKEY_LEN = 32
ED25519_SIGNATURE_LEN = 64
MIN_NONCE_LEN = 16
MAX_NONCE_LEN = 64
# Encrypted PPIDs are 256 or 384 bytes; leave room but refuse absurd sizes.
MAX_PPID_LEN = 1024

_TAG_INSTANCE = 0x01
_TAG_PPID = 0x02
_TAG_OPERATOR = 0x03
_TAG_OWNER = 0x04
_TAG_NONCE = 0x05
_TAG_ID_PUBKEY = 0x10
_TAG_ID_INSTANCE_SIG = 0x11
_TAG_ID_IDENTITY_SIG = 0x12
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_IDENTITY_MEMBERS: Final = (
    ("pubkey", ED25519_PUBKEY_LEN),
    ("instance_signature", ED25519_SIGNATURE_LEN),
    ("identity_signature", ED25519_SIGNATURE_LEN),
)


class ReportDataError(ValueError):
    """Base class of this library's errors."""


class EncodingError(ReportDataError):
    """The values cannot be bound: wrong sizes, or an owner without an operator."""


class SignatureError(ReportDataError):
    """An identity's signatures do not check out."""


class IdentityFormatError(ReportDataError):
    """The JSON object form of an identity is malformed. `field` names the member (e.g.
    ``operator.pubkey``), `reason` what is wrong with it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SmallOrderKeyError(SignatureError):
    """A public key encodes an ed25519 point of small order: OpenSSL accepts signatures under
    such a key that nobody made (e.g. key 01 00..00 with signature 01 00..00 for any message)."""


# Encodings, with the sign bit cleared, of the ed25519 points of small order, canonical or not:
# y = 0, y = 1, the two order-8 points, y = p - 1, y = p and y = p + 1.
_SMALL_ORDER_ENCODINGS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def reject_small_order_key(pubkey: bytes, what: str = "public key") -> None:
    """Raise SmallOrderKeyError if the 32-byte `pubkey` is a small-order ed25519 point."""
    if len(pubkey) == ED25519_PUBKEY_LEN and (
        pubkey[:31] + bytes((pubkey[31] & 0x7F,)) in _SMALL_ORDER_ENCODINGS
    ):
        raise SmallOrderKeyError(f"the {what} is a small-order ed25519 point")


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    """An operator or owner identity as bound to an instance.

    `instance_signature` is the identity key's signature over the 32 raw bytes of the instance
    public key; `identity_signature` is the instance key's signature over the identity key.
    """

    pubkey: bytes
    instance_signature: bytes
    identity_signature: bytes

    def to_object(self) -> dict[str, str]:
        """The JSON object form (API.md's IdentityInfo): each member in lowercase hex."""
        return {
            "pubkey": self.pubkey.hex(),
            "instance_signature": self.instance_signature.hex(),
            "identity_signature": self.identity_signature.hex(),
        }

    @classmethod
    def from_object(cls, obj: object, *, name: str = "identity") -> IdentityInfo:
        """Strictly decode the JSON object form: exactly its three members, each a hex string
        (either case, no whitespace) of its size. `name` prefixes the member in errors."""
        if not isinstance(obj, dict):
            raise IdentityFormatError(name, f"must be a JSON object, not {type(obj).__name__}")
        unknown = sorted(str(key) for key in obj if key not in dict(_IDENTITY_MEMBERS))
        if unknown:
            raise IdentityFormatError(name, f"has unknown member(s) {', '.join(unknown)}")
        values: dict[str, bytes] = {}
        for member, size in _IDENTITY_MEMBERS:
            field = f"{name}.{member}"
            if member not in obj:
                raise IdentityFormatError(field, "is missing")
            text = obj[member]
            if not isinstance(text, str) or _HEX.fullmatch(text) is None:
                raise IdentityFormatError(field, "must be a hex string")
            if len(text) != 2 * size:
                raise IdentityFormatError(field, f"must be {size} bytes ({2 * size} hex digits)")
            values[member] = bytes.fromhex(text)
        return cls(**values)


def _field(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


def _check_len(name: str, value: bytes, expected: int) -> None:
    if not isinstance(value, bytes) or len(value) != expected:
        raise EncodingError(f"{name} must be {expected} bytes")


def _identity(tag: int, name: str, identity: IdentityInfo | None) -> bytes:
    if identity is None:
        return bytes((tag, 0))
    _check_len(f"{name}.pubkey", identity.pubkey, ED25519_PUBKEY_LEN)
    _check_len(f"{name}.instance_signature", identity.instance_signature, ED25519_SIGNATURE_LEN)
    _check_len(f"{name}.identity_signature", identity.identity_signature, ED25519_SIGNATURE_LEN)
    return (
        bytes((tag, 1))
        + _field(_TAG_ID_PUBKEY, identity.pubkey)
        + _field(_TAG_ID_INSTANCE_SIG, identity.instance_signature)
        + _field(_TAG_ID_IDENTITY_SIG, identity.identity_signature)
    )


def _check_registration(
    instance_pubkey: bytes,
    ppid: bytes,
    operator: IdentityInfo | None,
    owner: IdentityInfo | None,
) -> None:
    """The sizes and the owner-needs-an-operator rule every registration binding (v1, v2) obeys."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    if not isinstance(ppid, bytes) or not 1 <= len(ppid) <= MAX_PPID_LEN:
        raise EncodingError(f"ppid must be 1 to {MAX_PPID_LEN} bytes")
    if owner is not None and operator is None:
        raise EncodingError("an owner can only be bound together with an operator")


def encode_binding(
    instance_pubkey: bytes,
    ppid: bytes,
    operator: IdentityInfo | None,
    owner: IdentityInfo | None,
) -> bytes:
    """The canonical version-1 encoding described in the package docstring."""
    _check_registration(instance_pubkey, ppid, operator, owner)
    return (
        DOMAIN
        + _field(_TAG_INSTANCE, instance_pubkey)
        + _field(_TAG_PPID, ppid)
        + _identity(_TAG_OPERATOR, "operator", operator)
        + _identity(_TAG_OWNER, "owner", owner)
    )


def report_data_for(
    instance_pubkey: bytes,
    ppid: bytes,
    operator: IdentityInfo | None,
    owner: IdentityInfo | None,
) -> bytes:
    """The 64-byte report_data committing to the binding: SHA-512 of `encode_binding`."""
    return hashlib.sha512(encode_binding(instance_pubkey, ppid, operator, owner)).digest()


def encode_challenge(instance_pubkey: bytes, nonce: bytes) -> bytes:
    """The canonical version-1 challenge encoding: ``CHALLENGE_DOMAIN || field(0x01,
    instance_pubkey) || field(0x05, nonce)``. Its domain tag is not a prefix of the registration
    binding's (nor that one of it), so no challenge encoding equals a registration encoding."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    if not isinstance(nonce, bytes) or not MIN_NONCE_LEN <= len(nonce) <= MAX_NONCE_LEN:
        raise EncodingError(f"nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes")
    return CHALLENGE_DOMAIN + _field(_TAG_INSTANCE, instance_pubkey) + _field(_TAG_NONCE, nonce)


def challenge_report_data(instance_pubkey: bytes, nonce: bytes) -> bytes:
    """The 64-byte report_data answering a verifier's challenge: SHA-512 of `encode_challenge`."""
    return hashlib.sha512(encode_challenge(instance_pubkey, nonce)).digest()


def _verify(pubkey: bytes, signature: bytes, message: bytes, what: str) -> None:
    reject_small_order_key(pubkey, f"key of the {what}")
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"{what} does not verify") from exc


def verify_identity(instance_pubkey: bytes, identity: IdentityInfo) -> None:
    """Check both signatures of `identity` against `instance_pubkey`; raise SignatureError
    (SmallOrderKeyError when either key is a small-order point)."""
    _check_len("instance_pubkey", instance_pubkey, ED25519_PUBKEY_LEN)
    _check_len("pubkey", identity.pubkey, ED25519_PUBKEY_LEN)
    _check_len("instance_signature", identity.instance_signature, ED25519_SIGNATURE_LEN)
    _check_len("identity_signature", identity.identity_signature, ED25519_SIGNATURE_LEN)
    _verify(
        identity.pubkey,
        identity.instance_signature,
        instance_pubkey,
        "the identity key's signature over the instance key",
    )
    _verify(
        instance_pubkey,
        identity.identity_signature,
        identity.pubkey,
        "the instance key's signature over the identity key",
    )


def sign_identity(
    instance_key: Ed25519PrivateKey, identity_pubkey: bytes, instance_signature: bytes
) -> IdentityInfo:
    """Counter-sign an identity with the instance key, after checking its own signature."""
    _check_len("pubkey", identity_pubkey, ED25519_PUBKEY_LEN)
    instance_pubkey = instance_key.public_key().public_bytes_raw()
    info = IdentityInfo(
        pubkey=identity_pubkey,
        instance_signature=instance_signature,
        identity_signature=instance_key.sign(identity_pubkey),
    )
    verify_identity(instance_pubkey, info)
    return info
