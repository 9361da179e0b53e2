"""Example and property tests of the report_data binding."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_report_data import (
    DOMAIN,
    EncodingError,
    IdentityInfo,
    SignatureError,
    SmallOrderKeyError,
    encode_binding,
    reject_small_order_key,
    report_data_for,
    sign_identity,
    verify_identity,
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.fixture
def instance_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _identity_for(instance_key: Ed25519PrivateKey) -> tuple[Ed25519PrivateKey, IdentityInfo]:
    key = Ed25519PrivateKey.generate()
    info = sign_identity(instance_key, _raw(key), key.sign(_raw(instance_key)))
    return key, info


def test_report_data_is_sha512_of_the_encoding(instance_key: Ed25519PrivateKey) -> None:
    _, operator = _identity_for(instance_key)
    encoded = encode_binding(_raw(instance_key), b"\x01" * 16, operator, None)
    assert encoded.startswith(DOMAIN)
    assert report_data_for(_raw(instance_key), b"\x01" * 16, operator, None) == (
        hashlib.sha512(encoded).digest()
    )
    assert len(report_data_for(_raw(instance_key), b"\x01" * 16, None, None)) == 64


def test_signed_identity_verifies(instance_key: Ed25519PrivateKey) -> None:
    _, operator = _identity_for(instance_key)
    verify_identity(_raw(instance_key), operator)


def test_identity_signed_for_another_instance_is_refused(instance_key: Ed25519PrivateKey) -> None:
    _, operator = _identity_for(instance_key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError):
        verify_identity(_raw(other), operator)


def test_sign_identity_refuses_a_bad_identity_signature(instance_key: Ed25519PrivateKey) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="identity key's signature"):
        sign_identity(instance_key, _raw(key), key.sign(b"something else"))


def test_swapped_signatures_are_refused(instance_key: Ed25519PrivateKey) -> None:
    _, operator = _identity_for(instance_key)
    swapped = IdentityInfo(
        operator.pubkey, operator.identity_signature, operator.instance_signature
    )
    with pytest.raises(SignatureError):
        verify_identity(_raw(instance_key), swapped)


@pytest.mark.parametrize(
    ("pubkey", "ppid"),
    [
        (b"\x00" * 31, b"\x01" * 16),
        (b"\x00" * 33, b"\x01" * 16),
        (b"\x00" * 32, b""),
        (b"\x00" * 32, b"\x01" * 1025),
    ],
)
def test_bad_sizes_are_refused(pubkey: bytes, ppid: bytes) -> None:
    with pytest.raises(EncodingError):
        encode_binding(pubkey, ppid, None, None)


def test_owner_without_operator_is_refused(instance_key: Ed25519PrivateKey) -> None:
    _, owner = _identity_for(instance_key)
    with pytest.raises(EncodingError, match="owner"):
        encode_binding(_raw(instance_key), b"\x01" * 16, None, owner)


def test_bad_identity_sizes_are_refused(instance_key: Ed25519PrivateKey) -> None:
    bad = IdentityInfo(b"\x00" * 32, b"\x00" * 63, b"\x00" * 64)
    with pytest.raises(EncodingError, match="instance_signature"):
        encode_binding(_raw(instance_key), b"\x01" * 16, bad, None)
    with pytest.raises(EncodingError):
        verify_identity(_raw(instance_key), bad)


def test_garbage_public_key_is_a_signature_error(instance_key: Ed25519PrivateKey) -> None:
    # 32 bytes that are not a valid curve point for some values; must never escape as ValueError
    info = IdentityInfo(b"\xff" * 32, b"\x00" * 64, b"\x00" * 64)
    with pytest.raises(SignatureError):
        verify_identity(_raw(instance_key), info)


_bytes32 = st.binary(min_size=32, max_size=32)
_bytes64 = st.binary(min_size=64, max_size=64)
_identities = st.none() | st.builds(IdentityInfo, _bytes32, _bytes64, _bytes64)
_bindings = st.tuples(_bytes32, st.binary(min_size=1, max_size=400), _identities, _identities)


def _valid(b: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None]) -> bool:
    return not (b[3] is not None and b[2] is None)


@settings(max_examples=300)
@given(_bindings.filter(_valid), _bindings.filter(_valid))
def test_different_bindings_never_encode_alike(
    a: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None],
    b: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None],
) -> None:
    assert (encode_binding(*a) == encode_binding(*b)) == (a == b)


@given(_bindings.filter(_valid), st.data())
def test_moving_bytes_between_ppid_and_identities_changes_the_encoding(
    binding: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None], data: st.DataObject
) -> None:
    # The seed's plain concatenation let bytes slide from the PPID into the next field.
    pubkey, ppid, operator, owner = binding
    extra = data.draw(st.binary(min_size=1, max_size=8))
    assert encode_binding(pubkey, ppid + extra, operator, owner) != encode_binding(
        pubkey, ppid, operator, owner
    )
    if operator is not None:
        assert report_data_for(pubkey, ppid, operator, owner) != report_data_for(
            pubkey, ppid, None, None
        )


def test_small_order_identity_key_is_refused_although_openssl_accepts_its_signature(
    instance_key: Ed25519PrivateKey,
) -> None:
    # Key 01 00..00 (the neutral point) and signature R = 01 00..00, S = 0 "verify" any message.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    neutral = bytes([1]) + bytes(31)
    forged = neutral + bytes(32)
    Ed25519PublicKey.from_public_bytes(neutral).verify(forged, b"any message")  # OpenSSL: ok
    info = IdentityInfo(neutral, forged, instance_key.sign(neutral))
    with pytest.raises(SmallOrderKeyError, match="small-order"):
        verify_identity(_raw(instance_key), info)
    with pytest.raises(SmallOrderKeyError):
        sign_identity(instance_key, neutral, forged)


@pytest.mark.parametrize("sign_bit", [0x00, 0x80])
def test_every_small_order_encoding_is_refused_with_either_sign_bit(sign_bit: int) -> None:
    for head in ("00", "01", "ec", "ed", "ee"):
        tail = "00" * 30 + "00" if head in ("00", "01") else "ff" * 30 + "7f"
        key = bytearray(bytes.fromhex(head + tail))
        key[31] |= sign_bit
        with pytest.raises(SmallOrderKeyError):
            reject_small_order_key(bytes(key))
    reject_small_order_key(_raw(Ed25519PrivateKey.generate()))
