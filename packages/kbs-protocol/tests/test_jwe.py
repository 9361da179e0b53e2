"""Resources as flattened JWE: round trips, an independent decryption, and tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from tdx_kbs_protocol import JweError, TeeKeyPair, TeePublicKey, encrypt_resource

PARTS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ec_recipient(
    curve: ec.EllipticCurve, crv: str, size: int
) -> tuple[ec.EllipticCurvePrivateKey, TeePublicKey]:
    private = ec.generate_private_key(curve)
    numbers = private.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": crv,
        "alg": "ECDH-ES+A256KW",
        "x": b64u(numbers.x.to_bytes(size, "big")),
        "y": b64u(numbers.y.to_bytes(size, "big")),
    }
    return private, TeePublicKey.from_jwk(jwk)


def concat_kdf_sha256(z: bytes, algorithm_id: bytes, key_bits: int) -> bytes:
    # RFC 7518 section 4.6.2, one round of SHA-256 suffices for a 256-bit key.
    other_info = (
        struct.pack(">I", len(algorithm_id))
        + algorithm_id
        + struct.pack(">I", 0)  # PartyUInfo: empty
        + struct.pack(">I", 0)  # PartyVInfo: empty
        + struct.pack(">I", key_bits)  # SuppPubInfo: keydatalen
    )
    return hashlib.sha256(struct.pack(">I", 1) + z + other_info).digest()[: key_bits // 8]


def decrypt_by_hand_ec(private: ec.EllipticCurvePrivateKey, jwe: dict[str, str]) -> bytes:
    header = json.loads(unb64u(jwe["protected"]))
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
    epk = header["epk"]
    size = (private.curve.key_size + 7) // 8
    peer = ec.EllipticCurvePublicNumbers(
        int.from_bytes(unb64u(epk["x"]), "big"),
        int.from_bytes(unb64u(epk["y"]), "big"),
        private.curve,
    ).public_key()
    z = private.exchange(ec.ECDH(), peer)
    assert len(z) == size
    kek = concat_kdf_sha256(z, b"ECDH-ES+A256KW", 256)
    cek = aes_key_unwrap(kek, unb64u(jwe["encrypted_key"]))
    aad = jwe["protected"].encode("ascii")
    return AESGCM(cek).decrypt(
        unb64u(jwe["iv"]), unb64u(jwe["ciphertext"]) + unb64u(jwe["tag"]), aad
    )


@pytest.mark.parametrize(
    ("curve", "crv", "size"), [(ec.SECP256R1(), "P-256", 32), (ec.SECP521R1(), "P-521", 66)]
)
def test_ec_jwe_decrypts_with_an_independent_implementation(
    curve: ec.EllipticCurve, crv: str, size: int
) -> None:
    private, public = ec_recipient(curve, crv, size)
    jwe = encrypt_resource(b"the store key", public)
    assert set(jwe) == set(PARTS)
    header = json.loads(unb64u(jwe["protected"]))
    assert set(header) == {"alg", "enc", "epk"}
    assert header["epk"]["crv"] == crv and header["epk"]["kty"] == "EC"
    assert len(unb64u(jwe["iv"])) == 12 and len(unb64u(jwe["tag"])) == 16
    assert len(unb64u(jwe["encrypted_key"])) == 40
    assert all("=" not in v for v in jwe.values())
    assert decrypt_by_hand_ec(private, jwe) == b"the store key"


def test_rsa_oaep_256_jwe_decrypts_with_an_independent_implementation() -> None:
    private = rsa.generate_private_key(65537, 2048)
    numbers = private.public_key().public_numbers()
    public = TeePublicKey.from_jwk(
        {
            "kty": "RSA",
            "alg": "RSA-OAEP-256",
            "n": b64u(numbers.n.to_bytes(256, "big")),
            "e": b64u(numbers.e.to_bytes(3, "big")),
        }
    )
    jwe = encrypt_resource(b"\x00" * 32, public)
    assert json.loads(unb64u(jwe["protected"])) == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    cek = private.decrypt(
        unb64u(jwe["encrypted_key"]),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    plain = AESGCM(cek).decrypt(
        unb64u(jwe["iv"]),
        unb64u(jwe["ciphertext"]) + unb64u(jwe["tag"]),
        jwe["protected"].encode("ascii"),
    )
    assert plain == b"\x00" * 32


def test_tee_key_pair_round_trip_and_public_jwk_shape() -> None:
    pair = TeeKeyPair.generate()
    assert set(pair.public.jwk) == {"kty", "crv", "alg", "x", "y"}
    assert (pair.public.jwk["kty"], pair.public.jwk["crv"]) == ("EC", "P-256")
    assert pair.public.jwk["alg"] == "ECDH-ES+A256KW"
    assert pair.decrypt(encrypt_resource(b"", pair.public)) == b""
    assert pair.decrypt(encrypt_resource(b"x" * 5000, pair.public)) == b"x" * 5000
    private_d = pair._private.as_dict(private=True)["d"]
    assert isinstance(private_d, str) and private_d not in repr(pair)


def flip(text: str) -> str:
    raw = bytearray(unb64u(text))
    raw[0] ^= 0x01
    return b64u(bytes(raw))


@pytest.mark.parametrize("member", ["encrypted_key", "iv", "ciphertext", "tag"])
def test_tampered_member_is_refused(member: str) -> None:
    pair = TeeKeyPair.generate()
    jwe = encrypt_resource(b"secret", pair.public)
    jwe[member] = flip(jwe[member])
    with pytest.raises(JweError):
        pair.decrypt(jwe)


def test_protected_header_reencoded_with_the_same_meaning_fails_the_aad() -> None:
    pair = TeeKeyPair.generate()
    jwe = encrypt_resource(b"secret", pair.public)
    header = json.loads(unb64u(jwe["protected"]))
    jwe["protected"] = b64u(json.dumps(header, separators=(", ", ": ")).encode())
    with pytest.raises(JweError, match="does not decrypt"):
        pair.decrypt(jwe)


def test_protected_header_with_another_epk_is_refused() -> None:
    pair = TeeKeyPair.generate()
    jwe = encrypt_resource(b"secret", pair.public)
    header = json.loads(unb64u(jwe["protected"]))
    header["epk"] = {k: v for k, v in TeeKeyPair.generate().public.jwk.items() if k != "alg"}
    jwe["protected"] = b64u(json.dumps(header, separators=(",", ":")).encode())
    with pytest.raises(JweError):
        pair.decrypt(jwe)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda j: {**j, "aad": "eA"}, id="extra-aad"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "tag"}, id="no-tag"),
        pytest.param(lambda j: {**j, "iv": j["iv"] + "="}, id="padded-iv"),
        pytest.param(lambda j: {**j, "iv": b64u(b"\x00" * 16)}, id="16-byte-iv"),
        pytest.param(lambda j: {**j, "tag": b64u(b"\x00" * 12)}, id="short-tag"),
        pytest.param(lambda j: {**j, "ciphertext": 5}, id="non-string"),
        pytest.param(lambda j: {**j, "protected": "!!"}, id="protected-not-base64"),
        pytest.param(lambda j: {**j, "protected": b64u(b"[1]")}, id="protected-not-object"),
        pytest.param(
            lambda j: {**j, "protected": b64u(b'{"alg":"ECDH-ES+A256KW","enc":"A128GCM"}')},
            id="enc-a128gcm",
        ),
        pytest.param(
            lambda j: {**j, "protected": b64u(b'{"alg":"dir","enc":"A256GCM"}')}, id="alg-dir"
        ),
        pytest.param(lambda j: ".".join(j.values()), id="compact-string"),
        pytest.param(lambda j: None, id="null"),
    ],
)
def test_malformed_jwe_is_refused(mutate: object) -> None:
    assert callable(mutate)
    pair = TeeKeyPair.generate()
    with pytest.raises(JweError):
        pair.decrypt(mutate(encrypt_resource(b"secret", pair.public)))


def test_jwe_for_another_key_is_refused() -> None:
    jwe = encrypt_resource(b"secret", TeeKeyPair.generate().public)
    with pytest.raises(JweError, match="does not decrypt"):
        TeeKeyPair.generate().decrypt(jwe)


def test_epk_with_private_or_extra_members_is_refused() -> None:
    pair = TeeKeyPair.generate()
    jwe = encrypt_resource(b"secret", pair.public)
    header = json.loads(unb64u(jwe["protected"]))
    header["epk"]["d"] = header["epk"]["x"]
    jwe["protected"] = b64u(json.dumps(header, separators=(",", ":")).encode())
    with pytest.raises(JweError, match="epk"):
        pair.decrypt(jwe)
