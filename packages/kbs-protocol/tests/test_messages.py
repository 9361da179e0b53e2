"""Strict parsing of the RCAR messages and of tee-pubkey JWKs; the runtime-data binding."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tdx_kbs_protocol import (
    ERROR_TYPE_BASE,
    Attestation,
    Challenge,
    MessageError,
    Request,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    TeeKeyPair,
    TeePublicKey,
    UnsupportedKeyError,
    error_body,
    runtime_data_binding,
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_jwk(curve: ec.EllipticCurve, crv: str, size: int) -> dict[str, str]:
    numbers = ec.generate_private_key(curve).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "alg": "ECDH-ES+A256KW",
        "x": b64u(numbers.x.to_bytes(size, "big")),
        "y": b64u(numbers.y.to_bytes(size, "big")),
    }


def rsa_jwk(bits: int = 2048, alg: str = "RSA-OAEP-256") -> dict[str, str]:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {
        "kty": "RSA",
        "alg": alg,
        "n": b64u(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64u(numbers.e.to_bytes(3, "big")),
    }


def test_ec_p256_and_p521_and_rsa_keys_are_accepted_exactly_as_received() -> None:
    for jwk in (
        ec_jwk(ec.SECP256R1(), "P-256", 32),
        ec_jwk(ec.SECP521R1(), "P-521", 66),
        rsa_jwk(),
    ):
        assert dict(TeePublicKey.from_jwk(jwk).jwk) == jwk


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda j: {**j, "alg": "RSA-OAEP"}, id="rsa-oaep"),
        pytest.param(lambda j: {**j, "alg": "RSA1_5"}, id="rsa1_5"),
        pytest.param(lambda j: {**j, "alg": "ECDH-ES+A256KW"}, id="ec-alg-on-rsa"),
        pytest.param(lambda j: {**j, "d": "AQAB"}, id="private-d"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "e"}, id="missing-e"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "alg"}, id="missing-alg"),
        pytest.param(lambda j: {**j, "e": 65537}, id="non-string-e"),
        pytest.param(lambda j: {**j, "kid": "x"}, id="unknown-member"),
        pytest.param(lambda j: {**j, "e": "AQ"}, id="exponent-1"),
        pytest.param(lambda j: {**j, "n": "AA" + j["n"]}, id="n-leading-zero"),
        pytest.param(lambda j: {**j, "kty": "oct"}, id="kty-oct"),
    ],
)
def test_rsa_jwk_refusals(mutate: object) -> None:
    assert callable(mutate)
    with pytest.raises(UnsupportedKeyError):
        TeePublicKey.from_jwk(mutate(rsa_jwk()))


def test_rsa_under_2048_bits_is_refused() -> None:
    with pytest.raises(UnsupportedKeyError, match="2048"):
        TeePublicKey.from_jwk(rsa_jwk(1024))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda j: {**j, "crv": "secp256k1"}, id="secp256k1"),
        pytest.param(lambda j: {**j, "crv": "P-384"}, id="p-384"),
        pytest.param(lambda j: {**j, "alg": "ECDH-ES"}, id="ecdh-es-direct"),
        pytest.param(lambda j: {**j, "alg": "RSA-OAEP-256"}, id="rsa-alg-on-ec"),
        pytest.param(lambda j: {**j, "d": j["x"]}, id="private-d"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "y"}, id="missing-y"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "crv"}, id="missing-crv"),
        pytest.param(lambda j: {**j, "x": 5}, id="non-string-x"),
        pytest.param(lambda j: {**j, "y": j["x"]}, id="not-on-curve"),
        pytest.param(lambda j: {**j, "x": j["x"] + "="}, id="padded"),
        pytest.param(lambda j: {**j, "x": j["x"][:-2]}, id="short-x"),
        pytest.param(lambda j: {**j, "use": "enc"}, id="unknown-member"),
        pytest.param(lambda j: [j], id="not-object"),
    ],
)
def test_ec_jwk_refusals(mutate: object) -> None:
    assert callable(mutate)
    with pytest.raises(UnsupportedKeyError):
        TeePublicKey.from_jwk(mutate(ec_jwk(ec.SECP256R1(), "P-256", 32)))


def test_unsupported_key_error_is_a_message_error() -> None:
    assert issubclass(UnsupportedKeyError, MessageError)


def quote_b64(size: int = 64) -> str:
    return base64.b64encode(bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)).decode()


def attestation_json() -> dict[str, object]:
    return {
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": dict(TeeKeyPair.generate().public.jwk)},
        "tee-evidence": {
            "primary_evidence": {"cc_eventlog": None, "quote": quote_b64()},
            "additional_evidence": "",
        },
        "init-data": None,
    }


def test_attestation_round_trips() -> None:
    obj = attestation_json()
    attestation = Attestation.from_json(obj)
    assert attestation.to_json() == obj
    assert Attestation.from_json(json.loads(json.dumps(attestation.to_json()))) == attestation


@pytest.mark.parametrize(
    "path",
    [
        ("extra",),
        ("runtime-data", "extra"),
        ("tee-evidence", "extra"),
        ("tee-evidence", "primary_evidence", "aa_eventlog"),
    ],
)
def test_unknown_members_are_refused(path: tuple[str, ...]) -> None:
    obj = attestation_json()
    target: object = obj
    for key in path[:-1]:
        assert isinstance(target, dict)
        target = target[key]
    assert isinstance(target, dict)
    target[path[-1]] = "x"
    with pytest.raises(MessageError, match="unknown"):
        Attestation.from_json(obj)


@pytest.mark.parametrize(
    "quote",
    [
        "",
        "not base64!",
        base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),  # the URL alphabet
        base64.b64encode(b"abcd").decode().rstrip("="),  # missing padding
        base64.b64encode(b"abcd").decode() + "\n",  # junk after
        "QQ==QQ==",  # padding inside
        "QR==",  # non-zero spare bits
        base64.b64encode(b"\x00" * (64 * 1024 + 1)).decode(),  # over 64 KiB
        42,
    ],
)
def test_quote_base64_is_strict_and_bounded(quote: object) -> None:
    with pytest.raises(MessageError):
        TdxEvidence.from_json({"cc_eventlog": None, "quote": quote})


def test_cc_eventlog_may_be_absent_null_or_base64() -> None:
    q = quote_b64()
    assert TdxEvidence.from_json({"quote": q}).cc_eventlog is None
    assert TdxEvidence.from_json({"quote": q, "cc_eventlog": "AAE="}).cc_eventlog == b"\x00\x01"
    with pytest.raises(MessageError):
        TdxEvidence.from_json({"quote": q, "cc_eventlog": 5})


@pytest.mark.parametrize("nonce", ["", "a" * 1025, "with space", "é", 5, None])
def test_nonce_is_bounded_printable_ascii(nonce: object) -> None:
    with pytest.raises(MessageError):
        Challenge.from_json({"nonce": nonce, "extra-params": ""})


def test_request_refuses_missing_members_and_wrong_types() -> None:
    with pytest.raises(MessageError):
        Request.from_json({"version": "0.4.0", "tee": "tdx"})
    with pytest.raises(MessageError):
        Request.from_json({"version": "0.4.0", "tee": "tdx", "extra-params": {}})
    with pytest.raises(MessageError):
        Request.from_json(["0.4.0"])


def test_challenge_fresh_is_32_random_bytes_in_padded_standard_base64() -> None:
    a, b = Challenge.fresh(), Challenge.fresh()
    assert a.nonce != b.nonce
    assert len(base64.b64decode(a.nonce, validate=True)) == 32
    assert a.nonce.endswith("=") and a.extra_params == ""


def test_init_data_must_be_format_and_body() -> None:
    obj = attestation_json()
    obj["init-data"] = {"format": "toml", "body": "x"}
    assert Attestation.from_json(obj).init_data == {"format": "toml", "body": "x"}
    obj["init-data"] = {"format": "toml"}
    with pytest.raises(MessageError):
        Attestation.from_json(obj)


def test_runtime_data_binding_is_sha384_of_the_jcs_object_then_16_zero_bytes() -> None:
    key = TeeKeyPair.generate().public
    binding = runtime_data_binding("n0nce", key, "extra")
    canonical = rfc8785.dumps(
        {"tee-pubkey": dict(key.jwk), "nonce": "n0nce", "additional-evidence": "extra"}
    )
    # The canonical form sorts members: additional-evidence, nonce, tee-pubkey (crv, kty...).
    assert canonical.startswith(b'{"additional-evidence":"extra","nonce":"n0nce","tee-pubkey":{')
    assert binding == hashlib.sha384(canonical).digest() + bytes(16)
    assert len(binding) == 64
    assert runtime_data_binding("n0nce", key, "other") != binding


def test_runtime_data_and_evidence_objects_validate_on_construction() -> None:
    with pytest.raises(MessageError):
        RuntimeData("", TeeKeyPair.generate().public)
    with pytest.raises(MessageError):
        TdxEvidence(quote=b"")
    with pytest.raises(MessageError):
        TeeEvidence(primary_evidence=TdxEvidence(quote=b"q"), additional_evidence=5)  # type: ignore[arg-type]


def test_error_body_has_trustee_type_detail_and_error() -> None:
    assert error_body("PolicyDeny", "no") == {
        "type": ERROR_TYPE_BASE + "PolicyDeny",
        "detail": "no",
        "error": "no",
    }


def test_duplicate_members_are_refused_in_additional_evidence_json() -> None:
    from tdx_kbs_protocol import IdentityEvidence

    with pytest.raises(MessageError, match="duplicate"):
        IdentityEvidence.decode(
            '{"event_log":"","event_log":"","instance_pubkey":"","possession":""}'
        )
