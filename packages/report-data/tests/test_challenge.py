"""Known answers and properties of the challenge binding (GET /instance/attestation)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_report_data import (
    CHALLENGE_DOMAIN,
    DOMAIN,
    MAX_NONCE_LEN,
    MIN_NONCE_LEN,
    EncodingError,
    IdentityInfo,
    challenge_report_data,
    encode_binding,
    encode_challenge,
    report_data_for,
)

INSTANCE = bytes(range(32))


@pytest.mark.parametrize(
    ("nonce", "expected"),
    [
        (
            bytes(16),
            "0f2238e13bfcd04f13ea3586c01d65fc767313180338f2fa8d7c3ac4168a4213"
            "24c1e7e80e7e9a711681e9dd53a06aaed5b7e626a121fe5cc1c17f1650d45acc",
        ),
        (
            b"\xff" * 32,
            "1f9919a2fa9b7c2861b239ab6673f89e3baea2bcd6e7534cd4c55ca6615254f0"
            "71fd138de30f289ff8a96f8125009744d368d6aa25e87504f8d1497d1892dcb8",
        ),
        (
            bytes(range(64)),
            "e77418242cba66234f2ef12d6cd215b2dec3f61d529e33a4e0fc6b172de8d44b"
            "eadd02415f3b42d2a7b86b3c93519b10c24de68489898c26c8551f04fa4839e9",
        ),
    ],
)
def test_known_answers(nonce: bytes, expected: str) -> None:
    assert challenge_report_data(INSTANCE, nonce).hex() == expected


def test_the_encoding_is_the_documented_byte_string() -> None:
    nonce = bytes(range(16))
    assert encode_challenge(INSTANCE, nonce) == (
        b"tdx-identity/challenge/v1\x00"
        + b"\x01\x00\x00\x00\x20"
        + INSTANCE
        + b"\x05\x00\x00\x00\x10"
        + nonce
    )
    assert (
        challenge_report_data(INSTANCE, nonce)
        == hashlib.sha512(encode_challenge(INSTANCE, nonce)).digest()
    )


def test_the_domain_tags_differ_and_neither_is_a_prefix_of_the_other() -> None:
    assert not CHALLENGE_DOMAIN.startswith(DOMAIN)
    assert not DOMAIN.startswith(CHALLENGE_DOMAIN)


@pytest.mark.parametrize(
    ("pubkey", "nonce"),
    [
        (INSTANCE, b""),
        (INSTANCE, bytes(MIN_NONCE_LEN - 1)),
        (INSTANCE, bytes(MAX_NONCE_LEN + 1)),
        (INSTANCE[:31], bytes(16)),
        (INSTANCE + b"\x00", bytes(16)),
    ],
)
def test_bad_sizes_are_refused(pubkey: bytes, nonce: bytes) -> None:
    with pytest.raises(EncodingError):
        encode_challenge(pubkey, nonce)


_bytes32 = st.binary(min_size=32, max_size=32)
_bytes64 = st.binary(min_size=64, max_size=64)
_nonces = st.binary(min_size=MIN_NONCE_LEN, max_size=MAX_NONCE_LEN)
_identities = st.none() | st.builds(IdentityInfo, _bytes32, _bytes64, _bytes64)


@st.composite
def _registrations(
    draw: st.DrawFn,
) -> tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None]:
    operator = draw(_identities)
    owner = draw(_identities) if operator is not None else None
    return draw(_bytes32), draw(st.binary(min_size=1, max_size=400)), operator, owner


@settings(max_examples=500)
@given(_bytes32, _nonces, _registrations())
def test_a_challenge_binding_never_equals_a_registration_binding(
    pubkey: bytes,
    nonce: bytes,
    registration: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None],
) -> None:
    challenge = encode_challenge(pubkey, nonce)
    binding = encode_binding(*registration)
    assert challenge != binding
    assert not challenge.startswith(binding) and not binding.startswith(challenge)
    assert challenge_report_data(pubkey, nonce) != report_data_for(*registration)


@settings(max_examples=300)
@given(_registrations(), _bytes32, _nonces)
def test_a_registration_binding_never_equals_a_challenge_binding(
    registration: tuple[bytes, bytes, IdentityInfo | None, IdentityInfo | None],
    pubkey: bytes,
    nonce: bytes,
) -> None:
    # The reverse direction, with the registration's own instance key as the challenged one.
    for challenged in (registration[0], pubkey):
        assert encode_binding(*registration) != encode_challenge(challenged, nonce)
        assert report_data_for(*registration) != challenge_report_data(challenged, nonce)


@settings(max_examples=300)
@given(st.tuples(_bytes32, _nonces), st.tuples(_bytes32, _nonces))
def test_different_challenges_never_encode_alike(
    a: tuple[bytes, bytes], b: tuple[bytes, bytes]
) -> None:
    assert (encode_challenge(*a) == encode_challenge(*b)) == (a == b)
