"""Resources as Trustee's flattened JWE (A256GCM content; ECDH-ES+A256KW or RSA-OAEP-256 keys)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from tdx_kbs_protocol._codec import b64url_decode, loads_object
from tdx_kbs_protocol._errors import JweError, MessageError
from tdx_kbs_protocol._messages import TeePublicKey

ENC: Final = "A256GCM"
MAX_JWE_PART_BYTES: Final = 16 * 1024 * 1024
_PARTS: Final = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
_HEADER_MEMBERS: Final = {
    "ECDH-ES+A256KW": frozenset({"alg", "enc", "epk"}),
    "RSA-OAEP-256": frozenset({"alg", "enc"}),
}


def _joserfc_public(recipient: TeePublicKey) -> ECKey | RSAKey:
    jwk: dict[str, str | list[str]] = {k: v for k, v in recipient.jwk.items() if k != "alg"}
    try:
        if jwk["kty"] == "EC":
            return ECKey.import_key(jwk)
        return RSAKey.import_key(jwk)
    except (JoseError, ValueError, TypeError) as exc:  # pragma: no cover - validated before
        raise JweError(f"tee-pubkey does not import: {exc}") from exc


def encrypt_resource(plaintext: bytes, recipient: TeePublicKey) -> dict[str, str]:
    """Encrypt a resource to a TEE key as Trustee's flattened JWE.

    The members are base64url without padding; the protected header holds alg, enc and (for EC
    keys) the ephemeral public key; the GCM AAD is the ASCII of the protected member.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    alg = recipient.jwk["alg"]
    compact = jwe.encrypt_compact(
        {"alg": alg, "enc": ENC},
        plaintext,
        _joserfc_public(recipient),
        algorithms=[alg, ENC],
    )
    parts = compact.split(".")
    if len(parts) != 5:  # pragma: no cover - joserfc's compact form always has five parts
        raise JweError("compact JWE does not have five parts")
    return dict(zip(_PARTS, parts, strict=True))


def parse_protected(protected: str) -> dict[str, object]:
    """Decode the protected member of a flattened JWE into its header object."""
    try:
        raw = b64url_decode(protected, what="protected", max_bytes=64 * 1024)
        return loads_object(raw, what="protected header", max_bytes=64 * 1024)
    except MessageError as exc:
        raise JweError(str(exc)) from exc


def _split(obj: object) -> tuple[str, ...]:
    if not isinstance(obj, dict):
        raise JweError("JWE is not a JSON object")
    if set(obj) != set(_PARTS):
        raise JweError(f"JWE members must be exactly {', '.join(_PARTS)}")
    parts: list[str] = []
    for name in _PARTS:
        value = obj[name]
        if not isinstance(value, str):
            raise JweError(f"JWE {name} is not a string")
        try:
            b64url_decode(value, what=name, max_bytes=MAX_JWE_PART_BYTES)
        except MessageError as exc:
            raise JweError(str(exc)) from exc
        parts.append(value)
    return tuple(parts)


@dataclass(frozen=True)
class TeeKeyPair:
    """The guest's ephemeral key: it goes in runtime-data and decrypts the resource."""

    _private: ECKey
    public: TeePublicKey

    @classmethod
    def generate(cls) -> TeeKeyPair:
        return cls.from_private(ECKey.generate_key("P-256", private=True))

    @classmethod
    def from_private(cls, key: ECKey) -> TeeKeyPair:
        """The pair of an existing P-256 private key (tests and fuzzing use a fixed one)."""
        pub = key.as_dict(private=False)
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ECDH-ES+A256KW",
            "x": str(pub["x"]),
            "y": str(pub["y"]),
        }
        return cls(_private=key, public=TeePublicKey.from_jwk(jwk))

    def __repr__(self) -> str:
        return f"TeeKeyPair(public={dict(self.public.jwk)!r})"

    def decrypt(self, jwe_obj: object) -> bytes:
        """Decrypt a flattened JWE addressed to this key; JweError on anything else."""
        parts = _split(jwe_obj)
        header = parse_protected(parts[0])
        alg = self.public.jwk["alg"]
        if header.get("alg") != alg or header.get("enc") != ENC:
            raise JweError(f"JWE must be {alg} / {ENC}")
        if set(header) != _HEADER_MEMBERS[alg]:
            raise JweError("JWE protected header has missing or unknown members")
        epk = header["epk"]
        if (
            not isinstance(epk, Mapping)
            or set(epk) != {"kty", "crv", "x", "y"}
            or epk.get("kty") != "EC"
            or epk.get("crv") != "P-256"
        ):
            raise JweError("JWE epk is not a public EC P-256 key {kty, crv, x, y}")
        if len(b64url_decode_or_jwe(parts[2], "iv")) != 12:
            raise JweError("JWE iv is not 12 bytes")
        if len(b64url_decode_or_jwe(parts[4], "tag")) != 16:
            raise JweError("JWE tag is not 16 bytes")
        try:
            result = jwe.decrypt_compact(".".join(parts), self._private, algorithms=[alg, ENC])
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise JweError(f"JWE does not decrypt: {type(exc).__name__}") from exc
        plaintext = result.plaintext
        if plaintext is None:  # pragma: no cover - joserfc returns bytes after decryption
            raise JweError("JWE has no plaintext")
        return plaintext


def b64url_decode_or_jwe(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text, what=what, max_bytes=MAX_JWE_PART_BYTES)
    except MessageError as exc:
        raise JweError(str(exc)) from exc
