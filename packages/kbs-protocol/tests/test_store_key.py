"""The store-key envelope: the owner's signature over (domain, instance, key), opened only with
the owner's and the instance's public keys."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tdx_kbs_protocol import (
    STORE_KEY_DOMAIN,
    STORE_KEY_ENVELOPE_BYTES,
    MessageError,
    StoreKeyEnvelopeError,
    open_store_key,
    seal_store_key,
)

OWNER = Ed25519PrivateKey.generate()
OWNER_PUB = OWNER.public_key().public_bytes_raw()
INSTANCE = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
KEY = secrets.token_bytes(32)
ENVELOPE = seal_store_key(OWNER, INSTANCE, KEY)


def opened(data: bytes, owner: bytes = OWNER_PUB, instance: bytes = INSTANCE) -> bytes:
    return open_store_key(data, owner_pubkey=owner, instance_pubkey=instance)


def test_round_trip_and_the_documented_bytes() -> None:
    assert STORE_KEY_DOMAIN == b"tdx-identity/store-key/v1\n"
    assert len(ENVELOPE) == STORE_KEY_ENVELOPE_BYTES == 26 + 32 + 32 + 64
    assert ENVELOPE[:26] == STORE_KEY_DOMAIN
    assert ENVELOPE[26:58] == INSTANCE
    assert ENVELOPE[58:90] == KEY
    Ed25519PublicKey.from_public_bytes(OWNER_PUB).verify(
        ENVELOPE[90:], STORE_KEY_DOMAIN + INSTANCE + KEY
    )
    assert opened(ENVELOPE) == KEY
    assert issubclass(StoreKeyEnvelopeError, MessageError)


def test_another_owner_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(StoreKeyEnvelopeError, match="not signed by the owner"):
        opened(ENVELOPE, owner=other.public_key().public_bytes_raw())
    with pytest.raises(StoreKeyEnvelopeError, match="not signed by the owner"):
        opened(seal_store_key(other, INSTANCE, KEY))


def test_another_instance_is_refused() -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(StoreKeyEnvelopeError, match="another instance"):
        opened(ENVELOPE, instance=other)
    with pytest.raises(StoreKeyEnvelopeError, match="another instance"):
        opened(seal_store_key(OWNER, other, KEY))


def test_a_flipped_bit_anywhere_is_refused() -> None:
    for bit in range(len(ENVELOPE) * 8):
        flipped = bytearray(ENVELOPE)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(StoreKeyEnvelopeError):
            opened(bytes(flipped))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        KEY,
        ENVELOPE[:-1],
        ENVELOPE[:90],
        ENVELOPE + b"\x00",
        ENVELOPE + ENVELOPE,
        b"\x00" + ENVELOPE[:-1],
    ],
    ids=["empty", "raw-key", "truncated", "unsigned", "extended", "doubled", "shifted"],
)
def test_a_truncated_or_extended_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(StoreKeyEnvelopeError):
        opened(data)


def test_a_wrong_domain_is_refused_even_when_signed() -> None:
    signed = b"tdx-identity/store-key/v2\n" + INSTANCE + KEY
    with pytest.raises(StoreKeyEnvelopeError, match="wrong domain"):
        opened(signed + OWNER.sign(signed))


@pytest.mark.parametrize(
    ("owner", "instance"),
    [(OWNER_PUB[:31], INSTANCE), (OWNER_PUB, INSTANCE + b"\x00"), ("ab" * 32, INSTANCE)],
)
def test_public_keys_of_the_wrong_size_are_refused(owner: object, instance: bytes) -> None:
    with pytest.raises(StoreKeyEnvelopeError):
        open_store_key(ENVELOPE, owner_pubkey=owner, instance_pubkey=instance)  # type: ignore[arg-type]


@pytest.mark.parametrize(("instance", "key"), [(INSTANCE[:31], KEY), (INSTANCE, KEY + b"\x00")])
def test_sealing_takes_only_32_byte_keys(instance: bytes, key: bytes) -> None:
    with pytest.raises(StoreKeyEnvelopeError):
        seal_store_key(OWNER, instance, key)


def test_the_key_is_never_in_a_refusal() -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    for data, owner, instance in [
        (ENVELOPE, other, INSTANCE),
        (ENVELOPE, OWNER_PUB, other),
        (ENVELOPE[:-1], OWNER_PUB, INSTANCE),
    ]:
        with pytest.raises(StoreKeyEnvelopeError) as info:
            opened(data, owner, instance)
        assert KEY.hex() not in str(info.value) and repr(KEY) not in str(info.value)
