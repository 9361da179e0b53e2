"""Version 2: the registration binding over the registry's challenge, the proof of possession,
and identity signatures that name their role. Byte strings as documented; no v2 message can be
taken for a v1 message, a challenge answer, or another v2 message."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_report_data import (
    CHALLENGE_DOMAIN,
    DOMAIN,
    IDENTITY_OVER_INSTANCE_DOMAIN_V2,
    INSTANCE_OVER_IDENTITY_DOMAIN_V2,
    MAX_NONCE_LEN,
    MIN_NONCE_LEN,
    POSSESSION_DOMAIN_V2,
    REGISTRATION_DOMAIN_V2,
    EncodingError,
    IdentityInfo,
    Role,
    SignatureError,
    SmallOrderKeyError,
    encode_binding,
    encode_binding_v2,
    encode_challenge,
    identity_over_instance_message,
    instance_over_identity_message,
    possession_message,
    prove_possession,
    report_data_for_v2,
    sign_identity,
    sign_identity_v2,
    sign_instance_v2,
    verify_identity,
    verify_identity_v2,
    verify_possession,
)

INSTANCE = bytes(range(32))
PPID = bytes(range(16))
CHALLENGE = bytes(range(100, 132))
DOMAINS = (
    DOMAIN,
    CHALLENGE_DOMAIN,
    REGISTRATION_DOMAIN_V2,
    POSSESSION_DOMAIN_V2,
    IDENTITY_OVER_INSTANCE_DOMAIN_V2,
    INSTANCE_OVER_IDENTITY_DOMAIN_V2,
)


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _identity_v2(
    instance: Ed25519PrivateKey, identity: Ed25519PrivateKey, role: Role
) -> IdentityInfo:
    signature = sign_instance_v2(identity, role, _raw(instance))
    return sign_identity_v2(instance, role, _raw(identity), signature)


def test_no_domain_tag_is_a_prefix_of_another() -> None:
    for a in DOMAINS:
        assert a.endswith(b"\x00") and a.count(b"\x00") == 1
        for b in DOMAINS:
            if a is not b:
                assert not b.startswith(a)


def test_the_v2_binding_is_the_documented_byte_string() -> None:
    identity = IdentityInfo(bytes([7]) * 32, bytes([8]) * 64, bytes([9]) * 64)
    encoding = encode_binding_v2(INSTANCE, PPID, CHALLENGE, identity, None)
    assert encoding == (
        b"tdx-identity/report-data/v2\x00"
        + b"\x01\x00\x00\x00\x20"
        + INSTANCE
        + b"\x02\x00\x00\x00\x10"
        + PPID
        + b"\x06\x00\x00\x00\x20"
        + CHALLENGE
        + b"\x03\x01"
        + b"\x10\x00\x00\x00\x20"
        + identity.pubkey
        + b"\x11\x00\x00\x00\x40"
        + identity.instance_signature
        + b"\x12\x00\x00\x00\x40"
        + identity.identity_signature
        + b"\x04\x00"
    )
    assert report_data_for_v2(INSTANCE, PPID, CHALLENGE, identity, None) == (
        hashlib.sha512(encoding).digest()
    )


def test_the_signed_messages_are_the_documented_byte_strings() -> None:
    report_data = bytes(range(64))
    assert possession_message(CHALLENGE, report_data) == (
        b"tdx-identity/proof-of-possession/v2\x00"
        + b"\x06\x00\x00\x00\x20"
        + CHALLENGE
        + b"\x07\x00\x00\x00\x40"
        + report_data
    )
    assert identity_over_instance_message("owner", INSTANCE) == (
        b"tdx-identity/identity-signs-instance/v2\x00"
        + b"\x20\x00\x00\x00\x05owner"
        + b"\x01\x00\x00\x00\x20"
        + INSTANCE
    )
    assert instance_over_identity_message("operator", INSTANCE) == (
        b"tdx-identity/instance-signs-identity/v2\x00"
        + b"\x20\x00\x00\x00\x08operator"
        + b"\x10\x00\x00\x00\x20"
        + INSTANCE
    )


@settings(max_examples=200, deadline=None)
@given(
    ppid=st.binary(min_size=1, max_size=64),
    challenge=st.binary(min_size=MIN_NONCE_LEN, max_size=MAX_NONCE_LEN),
    report_data=st.binary(min_size=64, max_size=64),
)
def test_no_v2_message_equals_a_v1_message_or_another_v2_message(
    ppid: bytes, challenge: bytes, report_data: bytes
) -> None:
    messages = [
        encode_binding(INSTANCE, ppid, None, None),
        encode_challenge(INSTANCE, challenge),
        encode_binding_v2(INSTANCE, ppid, challenge, None, None),
        possession_message(challenge, report_data),
        identity_over_instance_message("operator", INSTANCE),
        identity_over_instance_message("owner", INSTANCE),
        instance_over_identity_message("operator", INSTANCE),
        instance_over_identity_message("owner", INSTANCE),
        INSTANCE,  # what a v1 identity signature covers
    ]
    assert len(set(messages)) == len(messages)


@settings(max_examples=100, deadline=None)
@given(
    a=st.binary(min_size=MIN_NONCE_LEN, max_size=MAX_NONCE_LEN),
    b=st.binary(min_size=MIN_NONCE_LEN, max_size=MAX_NONCE_LEN),
)
def test_the_binding_changes_with_the_challenge(a: bytes, b: bytes) -> None:
    same = report_data_for_v2(INSTANCE, PPID, a, None, None) == report_data_for_v2(
        INSTANCE, PPID, b, None, None
    )
    assert same == (a == b)


def test_a_proof_of_possession_verifies_only_for_its_challenge_and_report_data() -> None:
    instance = _key(1)
    report_data = report_data_for_v2(_raw(instance), PPID, CHALLENGE, None, None)
    proof = prove_possession(instance, CHALLENGE, report_data)
    verify_possession(_raw(instance), CHALLENGE, report_data, proof)
    other_challenge = bytes(32)
    with pytest.raises(SignatureError, match="proof of possession"):
        verify_possession(_raw(instance), other_challenge, report_data, proof)
    with pytest.raises(SignatureError):
        verify_possession(_raw(instance), CHALLENGE, bytes(64), proof)
    with pytest.raises(SignatureError):
        verify_possession(_raw(_key(2)), CHALLENGE, report_data, proof)
    with pytest.raises(SignatureError):  # the raw report_data signed is not a proof
        verify_possession(_raw(instance), CHALLENGE, report_data, instance.sign(report_data))


def test_v2_identities_verify_in_their_role_only() -> None:
    instance, operator = _key(1), _key(3)
    info = _identity_v2(instance, operator, "operator")
    verify_identity_v2(_raw(instance), "operator", info)
    with pytest.raises(SignatureError):
        verify_identity_v2(_raw(instance), "owner", info)
    with pytest.raises(SignatureError):  # a v2 identity is not a v1 identity
        verify_identity(_raw(instance), info)
    with pytest.raises(SignatureError):
        verify_identity_v2(_raw(_key(2)), "operator", info)


def test_a_v1_identity_is_not_a_v2_identity() -> None:
    instance, operator = _key(1), _key(3)
    v1 = sign_identity(instance, _raw(operator), operator.sign(_raw(instance)))
    verify_identity(_raw(instance), v1)
    roles: tuple[Role, ...] = ("operator", "owner")
    for role in roles:
        with pytest.raises(SignatureError):
            verify_identity_v2(_raw(instance), role, v1)
    with pytest.raises(SignatureError):  # the instance refuses to counter-sign a v1 signature
        sign_identity_v2(instance, "operator", _raw(operator), operator.sign(_raw(instance)))


def test_small_order_keys_and_bad_sizes_are_refused() -> None:
    instance = _key(1)
    small = bytes(32)
    with pytest.raises(SmallOrderKeyError):
        verify_possession(small, CHALLENGE, bytes(64), bytes(64))
    with pytest.raises(SmallOrderKeyError):
        verify_identity_v2(_raw(instance), "owner", IdentityInfo(small, bytes(64), bytes(64)))
    for challenge in (bytes(MIN_NONCE_LEN - 1), bytes(MAX_NONCE_LEN + 1)):
        with pytest.raises(EncodingError, match="challenge"):
            encode_binding_v2(INSTANCE, PPID, challenge, None, None)
        with pytest.raises(EncodingError, match="challenge"):
            possession_message(challenge, bytes(64))
    with pytest.raises(EncodingError, match="report_data"):
        possession_message(CHALLENGE, bytes(63))
    with pytest.raises(EncodingError, match="role"):
        identity_over_instance_message("admin", INSTANCE)  # type: ignore[arg-type]
    owner = IdentityInfo(bytes([7]) * 32, bytes(64), bytes(64))
    with pytest.raises(EncodingError, match="owner"):
        encode_binding_v2(INSTANCE, PPID, CHALLENGE, None, owner)
