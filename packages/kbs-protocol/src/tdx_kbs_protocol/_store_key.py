"""The store-key envelope: an instance's store key, signed by its owner for that instance.

Anyone can encrypt a JWE to a TD's ephemeral TEE key, so the JWE alone does not say who chose
the key inside. The owner therefore uploads the store key wrapped in an envelope it signs with
its ed25519 key, naming the instance; the TD opens it with the owner public key it holds and its
own instance key, and takes no key whose envelope does not verify.

    envelope = STORE_KEY_DOMAIN (26) || instance pubkey (32) || key (32) || signature (64)

where the signature is the owner's ed25519 signature over the first 90 bytes
(domain || instance pubkey || key). Every envelope is exactly 154 bytes.
"""

from __future__ import annotations

import hmac
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tdx_kbs_protocol._errors import StoreKeyEnvelopeError

STORE_KEY_DOMAIN: Final = b"tdx-identity/store-key/v1\n"
STORE_KEY_BYTES: Final = 32
STORE_KEY_ENVELOPE_BYTES: Final = len(STORE_KEY_DOMAIN) + 32 + STORE_KEY_BYTES + 64

_PUBKEY_BYTES: Final = 32
_SIGNED_BYTES: Final = len(STORE_KEY_DOMAIN) + _PUBKEY_BYTES + STORE_KEY_BYTES


def _exactly(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise StoreKeyEnvelopeError(f"{what} is not {size} bytes")
    return value


def seal_store_key(owner_key: Ed25519PrivateKey, instance_pubkey: bytes, key: bytes) -> bytes:
    """The 154-byte envelope of `key` for the instance `instance_pubkey`, signed by
    `owner_key`. StoreKeyEnvelopeError when the instance key or the store key is not 32 bytes."""
    if not isinstance(owner_key, Ed25519PrivateKey):
        raise StoreKeyEnvelopeError("the owner key is not an ed25519 private key")
    signed = (
        STORE_KEY_DOMAIN
        + _exactly(instance_pubkey, _PUBKEY_BYTES, "the instance public key")
        + _exactly(key, STORE_KEY_BYTES, "the store key")
    )
    return signed + owner_key.sign(signed)


def open_store_key(data: bytes, *, owner_pubkey: bytes, instance_pubkey: bytes) -> bytes:
    """The store key in the envelope `data`, once it is exactly 154 bytes, starts with
    STORE_KEY_DOMAIN, names `instance_pubkey` and carries a signature of `owner_pubkey` over
    domain || instance || key. StoreKeyEnvelopeError otherwise; the key is never in the
    message."""
    owner = _exactly(owner_pubkey, _PUBKEY_BYTES, "the owner public key")
    instance = _exactly(instance_pubkey, _PUBKEY_BYTES, "the instance public key")
    if not isinstance(data, bytes):
        raise StoreKeyEnvelopeError("a store-key envelope is bytes")
    if len(data) != STORE_KEY_ENVELOPE_BYTES:
        raise StoreKeyEnvelopeError(
            f"a store-key envelope is {STORE_KEY_ENVELOPE_BYTES} bytes, not {len(data)}"
        )
    domain_end = len(STORE_KEY_DOMAIN)
    if not hmac.compare_digest(data[:domain_end], STORE_KEY_DOMAIN):
        raise StoreKeyEnvelopeError("not a store-key envelope (wrong domain)")
    if not hmac.compare_digest(data[domain_end : domain_end + _PUBKEY_BYTES], instance):
        raise StoreKeyEnvelopeError("the store-key envelope is for another instance")
    try:
        Ed25519PublicKey.from_public_bytes(owner).verify(data[_SIGNED_BYTES:], data[:_SIGNED_BYTES])
    except (InvalidSignature, ValueError):
        raise StoreKeyEnvelopeError(
            "the store-key envelope is not signed by the owner's key"
        ) from None
    return data[domain_end + _PUBKEY_BYTES : _SIGNED_BYTES]
