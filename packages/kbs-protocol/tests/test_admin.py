"""Admin bearer tokens: EdDSA JWTs and every refusal of verify_admin_token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_kbs_protocol import AdminClaims, AdminTokenError, make_admin_token, verify_admin_token

NOW = 1_800_000_000
KEY = Ed25519PrivateKey.generate()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, object], claims: dict[str, object], key: Ed25519PrivateKey = KEY
) -> str:
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64u(key.sign(signing_input.encode()))}"


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"role": "admin", "iat": NOW, "exp": NOW + 60}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


HEADER: dict[str, object] = {"alg": "EdDSA", "typ": "JWT"}


def test_good_token_verifies() -> None:
    token = make_admin_token(KEY, lifetime=60, now=NOW)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == HEADER
    assert verify_admin_token(token, KEY.public_key(), now=NOW + 10) == AdminClaims(
        iat=NOW, exp=NOW + 60, role="admin"
    )


def test_a_hand_made_token_verifies_too() -> None:
    assert verify_admin_token(forge(HEADER, claims()), KEY.public_key(), now=NOW).role == "admin"


def test_alg_none_is_refused() -> None:
    none_header = b64u(b'{"alg":"none"}')
    signing_input = f"{none_header}.{b64u(json.dumps(claims()).encode())}"
    for token in (signing_input + ".", signing_input + ".AAAA"):
        with pytest.raises(AdminTokenError):
            verify_admin_token(token, KEY.public_key(), now=NOW)


def test_hs256_is_refused_even_keyed_with_the_public_key() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    secret = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    hs_header = b64u(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{hs_header}.{b64u(json.dumps(claims()).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AdminTokenError, match="alg"):
        verify_admin_token(f"{signing_input}.{b64u(mac)}", KEY.public_key(), now=NOW)


def test_signed_by_another_key_is_refused() -> None:
    token = make_admin_token(Ed25519PrivateKey.generate(), now=NOW)
    with pytest.raises(AdminTokenError, match="signature"):
        verify_admin_token(token, KEY.public_key(), now=NOW)


def test_tampered_claims_are_refused() -> None:
    head, _, sig = make_admin_token(KEY, now=NOW).split(".")
    body = b64u(json.dumps(claims(exp=NOW + 299)).encode())
    with pytest.raises(AdminTokenError, match="signature"):
        verify_admin_token(f"{head}.{body}.{sig}", KEY.public_key(), now=NOW)


def test_expired_is_refused_after_the_leeway() -> None:
    token = make_admin_token(KEY, lifetime=60, now=NOW)
    verify_admin_token(token, KEY.public_key(), now=NOW + 64, leeway=5)
    with pytest.raises(AdminTokenError, match="expired"):
        verify_admin_token(token, KEY.public_key(), now=NOW + 65, leeway=5)


def test_issued_in_the_future_is_refused() -> None:
    token = make_admin_token(KEY, now=NOW + 100)
    with pytest.raises(AdminTokenError, match="future"):
        verify_admin_token(token, KEY.public_key(), now=NOW)


def test_nbf_in_the_future_is_refused() -> None:
    with pytest.raises(AdminTokenError, match="not yet"):
        verify_admin_token(forge(HEADER, claims(nbf=NOW + 30)), KEY.public_key(), now=NOW)


@pytest.mark.parametrize(
    ("claim_set", "reason"),
    [
        (claims(exp=None), "no exp"),
        (claims(iat=None), "no iat"),
        (claims(exp="1800000060"), "exp is not an integer"),
        (claims(iat=True), "iat is not an integer"),
        (claims(exp=NOW + 60.5), "exp is not an integer"),
        (claims(exp=NOW + 301), "lifetime"),
        (claims(exp=NOW), "not after iat"),
        (claims(role="user"), "role"),
        (claims(role=None), "role"),
        (claims(role=["admin"]), "role"),
    ],
)
def test_bad_claims_are_refused(claim_set: dict[str, object], reason: str) -> None:
    with pytest.raises(AdminTokenError, match=reason):
        verify_admin_token(forge(HEADER, claim_set), KEY.public_key(), now=NOW)


def test_lifetime_limit_is_the_callers() -> None:
    token = make_admin_token(KEY, lifetime=600, now=NOW)
    with pytest.raises(AdminTokenError, match="lifetime"):
        verify_admin_token(token, KEY.public_key(), now=NOW)
    assert verify_admin_token(token, KEY.public_key(), now=NOW, max_lifetime=600).exp == NOW + 600


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "..",
        "!!!.@@@.###",
        f"{b64u(b'not json')}.{b64u(b'{}')}.AAAA",
        f"{b64u(b'[]')}.{b64u(b'{}')}.AAAA",
        "x" * 9000,
    ],
)
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(AdminTokenError):
        verify_admin_token(token, KEY.public_key(), now=NOW)


def test_header_with_extra_members_or_another_typ_is_refused() -> None:
    headers: list[dict[str, object]] = [
        {"alg": "EdDSA", "crit": ["x"], "x": 1},
        {"alg": "EdDSA", "typ": "JWS"},
    ]
    for header in headers:
        with pytest.raises(AdminTokenError, match="header"):
            verify_admin_token(forge(header, claims()), KEY.public_key(), now=NOW)


def test_make_admin_token_refuses_a_non_positive_lifetime() -> None:
    with pytest.raises(AdminTokenError):
        make_admin_token(KEY, lifetime=0, now=NOW)
