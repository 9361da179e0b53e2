"""The RCAR messages of Trustee's KBS protocol (version 0.4.0), parsed strictly."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tdx_kbs_protocol._codec import (
    b64std_decode,
    b64std_encode,
    b64url_decode,
    expect_object,
    expect_str,
    jcs,
)
from tdx_kbs_protocol._errors import MessageError, UnsupportedKeyError

PROTOCOL_VERSION: Final = "0.4.0"
TEE_TDX: Final = "tdx"
ERROR_TYPE_BASE: Final = "https://github.com/confidential-containers/kbs/errors/"

MAX_NONCE_CHARS: Final = 1024
MAX_QUOTE_BYTES: Final = 64 * 1024
MAX_CC_EVENTLOG_BYTES: Final = 2 * 1024 * 1024
MAX_ADDITIONAL_EVIDENCE_CHARS: Final = 3 * 1024 * 1024
MAX_EXTRA_PARAMS_CHARS: Final = 4096
MAX_TEE_CHARS: Final = 64
MAX_VERSION_CHARS: Final = 64
MAX_INIT_DATA_CHARS: Final = 64 * 1024
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192

_NONCE = re.compile(r"[\x21-\x7e]+")

_EC_CURVES: Final[Mapping[str, tuple[ec.EllipticCurve, int]]] = MappingProxyType(
    {"P-256": (ec.SECP256R1(), 32), "P-521": (ec.SECP521R1(), 66)}
)
_EC_ALG: Final = "ECDH-ES+A256KW"
_RSA_ALG: Final = "RSA-OAEP-256"
_EC_MEMBERS: Final = frozenset({"kty", "crv", "alg", "x", "y"})
_RSA_MEMBERS: Final = frozenset({"kty", "alg", "n", "e"})
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _nonce(obj: object, what: str) -> str:
    text = expect_str(obj, what=what, max_len=MAX_NONCE_CHARS, allow_empty=False)
    if _NONCE.fullmatch(text) is None:
        raise MessageError(f"{what} has characters other than printable ASCII")
    return text


@dataclass(frozen=True)
class Request:
    """The client's first message (POST /kbs/v0/auth)."""

    version: str
    tee: str
    extra_params: str

    def __post_init__(self) -> None:
        expect_str(self.version, what="version", max_len=MAX_VERSION_CHARS, allow_empty=False)
        expect_str(self.tee, what="tee", max_len=MAX_TEE_CHARS, allow_empty=False)
        expect_str(self.extra_params, what="extra-params", max_len=MAX_EXTRA_PARAMS_CHARS)

    @classmethod
    def from_json(cls, obj: object) -> Request:
        m = expect_object(
            obj, what="request", required=frozenset({"version", "tee", "extra-params"})
        )
        return cls(
            version=expect_str(m["version"], what="version", max_len=MAX_VERSION_CHARS),
            tee=expect_str(m["tee"], what="tee", max_len=MAX_TEE_CHARS),
            extra_params=expect_str(
                m["extra-params"], what="extra-params", max_len=MAX_EXTRA_PARAMS_CHARS
            ),
        )

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "tee": self.tee, "extra-params": self.extra_params}


@dataclass(frozen=True)
class Challenge:
    """The server's answer to a Request: a nonce the evidence must bind."""

    nonce: str
    extra_params: str = ""

    def __post_init__(self) -> None:
        _nonce(self.nonce, "nonce")
        expect_str(self.extra_params, what="extra-params", max_len=MAX_EXTRA_PARAMS_CHARS)

    @classmethod
    def fresh(cls) -> Challenge:
        """A challenge with 32 fresh random bytes, standard base64 with padding (as Trustee)."""
        return cls(nonce=b64std_encode(secrets.token_bytes(32)))

    @classmethod
    def from_json(cls, obj: object) -> Challenge:
        m = expect_object(obj, what="challenge", required=frozenset({"nonce", "extra-params"}))
        return cls(
            nonce=_nonce(m["nonce"], "nonce"),
            extra_params=expect_str(
                m["extra-params"], what="extra-params", max_len=MAX_EXTRA_PARAMS_CHARS
            ),
        )

    def to_json(self) -> dict[str, object]:
        return {"nonce": self.nonce, "extra-params": self.extra_params}


def _validated_jwk(obj: object) -> dict[str, str]:
    if not isinstance(obj, dict):
        raise UnsupportedKeyError("tee-pubkey is not a JSON object")
    if not all(isinstance(k, str) for k in obj):
        raise UnsupportedKeyError("tee-pubkey has a non-string member name")
    private = _PRIVATE_MEMBERS & set(obj)
    if private:
        raise UnsupportedKeyError(f"tee-pubkey has private member(s) {', '.join(sorted(private))}")
    if not all(isinstance(v, str) for v in obj.values()):
        raise UnsupportedKeyError("tee-pubkey has a non-string member")
    jwk: dict[str, str] = dict(obj)
    kty = jwk.get("kty")
    if kty == "EC":
        _check_members(jwk, _EC_MEMBERS)
        if jwk["alg"] != _EC_ALG:
            raise UnsupportedKeyError(f"an EC tee-pubkey must have alg {_EC_ALG}")
        curve = _EC_CURVES.get(jwk["crv"])
        if curve is None:
            raise UnsupportedKeyError("tee-pubkey curve is not P-256 or P-521")
        try:
            x = b64url_decode(jwk["x"], what="x", max_bytes=curve[1])
            y = b64url_decode(jwk["y"], what="y", max_bytes=curve[1])
        except MessageError as exc:
            raise UnsupportedKeyError(f"tee-pubkey coordinate: {exc}") from exc
        if len(x) != curve[1] or len(y) != curve[1]:
            raise UnsupportedKeyError("tee-pubkey coordinates have the wrong length")
        try:
            ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve[0]
            ).public_key()
        except ValueError as exc:
            raise UnsupportedKeyError("tee-pubkey is not a point on its curve") from exc
    elif kty == "RSA":
        _check_members(jwk, _RSA_MEMBERS)
        if jwk["alg"] != _RSA_ALG:
            raise UnsupportedKeyError(f"an RSA tee-pubkey must have alg {_RSA_ALG}")
        try:
            n_raw = b64url_decode(jwk["n"], what="n", max_bytes=MAX_RSA_BITS // 8)
            e_raw = b64url_decode(jwk["e"], what="e", max_bytes=4)
        except MessageError as exc:
            raise UnsupportedKeyError(f"tee-pubkey RSA member: {exc}") from exc
        if not n_raw or n_raw[0] == 0 or not e_raw or e_raw[0] == 0:
            raise UnsupportedKeyError("tee-pubkey RSA members are not minimal big-endian integers")
        n = int.from_bytes(n_raw, "big")
        e = int.from_bytes(e_raw, "big")
        if n.bit_length() < MIN_RSA_BITS:
            raise UnsupportedKeyError(f"an RSA tee-pubkey must have at least {MIN_RSA_BITS} bits")
        if n % 2 == 0:  # no RSA modulus is even; OpenSSL would refuse to encrypt to it
            raise UnsupportedKeyError("tee-pubkey RSA modulus is even")
        try:
            rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise UnsupportedKeyError("tee-pubkey is not a valid RSA public key") from exc
        if e < 3 or e % 2 == 0:
            raise UnsupportedKeyError("tee-pubkey RSA exponent is not an odd number >= 3")
    else:
        raise UnsupportedKeyError("tee-pubkey kty is not EC or RSA")
    return jwk


def _check_members(jwk: Mapping[str, str], members: frozenset[str]) -> None:
    missing = members - set(jwk)
    if missing:
        raise UnsupportedKeyError(f"tee-pubkey lacks {', '.join(sorted(missing))}")
    unknown = set(jwk) - members
    if unknown:
        raise UnsupportedKeyError(f"tee-pubkey has unknown member(s) {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class TeePublicKey:
    """The TEE's ephemeral public key (a JWK) that the resource is encrypted to."""

    jwk: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "jwk", MappingProxyType(_validated_jwk(dict(self.jwk))))

    @classmethod
    def from_jwk(cls, obj: object) -> TeePublicKey:
        if not isinstance(obj, dict):
            raise UnsupportedKeyError("tee-pubkey is not a JSON object")
        return cls(jwk=obj)  # __post_init__ validates it (once)

    def to_json(self) -> dict[str, object]:
        return dict(self.jwk)

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON of the JWK."""
        return jcs(dict(self.jwk))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TeePublicKey):
            return NotImplemented
        return dict(self.jwk) == dict(other.jwk)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.jwk.items())))


@dataclass(frozen=True)
class RuntimeData:
    nonce: str
    tee_pubkey: TeePublicKey

    def __post_init__(self) -> None:
        _nonce(self.nonce, "runtime-data nonce")
        if not isinstance(self.tee_pubkey, TeePublicKey):
            raise MessageError("tee-pubkey is not a TeePublicKey")

    @classmethod
    def from_json(cls, obj: object) -> RuntimeData:
        m = expect_object(obj, what="runtime-data", required=frozenset({"nonce", "tee-pubkey"}))
        return cls(
            nonce=_nonce(m["nonce"], "runtime-data nonce"),
            tee_pubkey=TeePublicKey.from_jwk(m["tee-pubkey"]),
        )

    def to_json(self) -> dict[str, object]:
        return {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey.to_json()}


@dataclass(frozen=True)
class TdxEvidence:
    """Trustee's TDX evidence: a quote and, optionally, the CCEL ACPI table (both raw bytes)."""

    quote: bytes
    cc_eventlog: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.quote, bytes) or not self.quote:
            raise MessageError("quote is empty")
        if len(self.quote) > MAX_QUOTE_BYTES:
            raise MessageError(f"quote is longer than {MAX_QUOTE_BYTES} bytes")
        if self.cc_eventlog is not None and (
            not isinstance(self.cc_eventlog, bytes) or len(self.cc_eventlog) > MAX_CC_EVENTLOG_BYTES
        ):
            raise MessageError(f"cc_eventlog is longer than {MAX_CC_EVENTLOG_BYTES} bytes")

    @classmethod
    def from_json(cls, obj: object) -> TdxEvidence:
        m = expect_object(
            obj,
            what="TDX evidence",
            required=frozenset({"quote"}),
            optional=frozenset({"cc_eventlog"}),
        )
        quote_text = m["quote"]
        if not isinstance(quote_text, str):
            raise MessageError("quote is not a string")
        quote = b64std_decode(quote_text, what="quote", max_bytes=MAX_QUOTE_BYTES)
        log_text = m.get("cc_eventlog")
        log: bytes | None = None
        if log_text is not None:
            if not isinstance(log_text, str):
                raise MessageError("cc_eventlog is not a string or null")
            log = b64std_decode(log_text, what="cc_eventlog", max_bytes=MAX_CC_EVENTLOG_BYTES)
        return cls(quote=quote, cc_eventlog=log)

    def to_json(self) -> dict[str, object]:
        return {
            "cc_eventlog": None if self.cc_eventlog is None else b64std_encode(self.cc_eventlog),
            "quote": b64std_encode(self.quote),
        }


@dataclass(frozen=True)
class TeeEvidence:
    primary_evidence: TdxEvidence
    additional_evidence: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.primary_evidence, TdxEvidence):
            raise MessageError("primary_evidence is not TDX evidence")
        expect_str(
            self.additional_evidence,
            what="additional_evidence",
            max_len=MAX_ADDITIONAL_EVIDENCE_CHARS,
        )

    @classmethod
    def from_json(cls, obj: object) -> TeeEvidence:
        m = expect_object(
            obj,
            what="tee-evidence",
            required=frozenset({"primary_evidence", "additional_evidence"}),
        )
        return cls(
            primary_evidence=TdxEvidence.from_json(m["primary_evidence"]),
            additional_evidence=expect_str(
                m["additional_evidence"],
                what="additional_evidence",
                max_len=MAX_ADDITIONAL_EVIDENCE_CHARS,
            ),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "primary_evidence": self.primary_evidence.to_json(),
            "additional_evidence": self.additional_evidence,
        }


def _init_data(obj: object) -> dict[str, str] | None:
    if obj is None:
        return None
    m = expect_object(obj, what="init-data", required=frozenset({"format", "body"}))
    return {
        "format": expect_str(m["format"], what="init-data format", max_len=64),
        "body": expect_str(m["body"], what="init-data body", max_len=MAX_INIT_DATA_CHARS),
    }


@dataclass(frozen=True)
class Attestation:
    """The client's second message (POST /kbs/v0/attest)."""

    runtime_data: RuntimeData
    tee_evidence: TeeEvidence
    init_data: object | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.runtime_data, RuntimeData):
            raise MessageError("runtime-data is not RuntimeData")
        if not isinstance(self.tee_evidence, TeeEvidence):
            raise MessageError("tee-evidence is not TeeEvidence")
        object.__setattr__(self, "init_data", _init_data(self.init_data))

    @classmethod
    def from_json(cls, obj: object) -> Attestation:
        m = expect_object(
            obj,
            what="attestation",
            required=frozenset({"runtime-data", "tee-evidence"}),
            optional=frozenset({"init-data"}),
        )
        return cls(
            runtime_data=RuntimeData.from_json(m["runtime-data"]),
            tee_evidence=TeeEvidence.from_json(m["tee-evidence"]),
            init_data=_init_data(m.get("init-data")),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "runtime-data": self.runtime_data.to_json(),
            "tee-evidence": self.tee_evidence.to_json(),
            "init-data": self.init_data,
        }


def runtime_data_binding(nonce: str, tee_pubkey: TeePublicKey, additional_evidence: str) -> bytes:
    """The 64-byte TDX report_data that binds a session's nonce, TEE key and additional evidence.

    SHA-384 of the RFC 8785 canonical JSON of
    ``{"tee-pubkey": jwk, "nonce": nonce, "additional-evidence": additional_evidence}``,
    followed by 16 zero bytes.
    """
    digest = hashlib.sha384(
        jcs(
            {
                "tee-pubkey": dict(tee_pubkey.jwk),
                "nonce": nonce,
                "additional-evidence": additional_evidence,
            }
        )
    ).digest()
    return digest + bytes(16)


def error_body(variant: str, detail: str) -> dict[str, str]:
    """Trustee's error body ``{"type": ERROR_TYPE_BASE + variant, "detail": ...}``, plus "error"."""
    return {"type": ERROR_TYPE_BASE + variant, "detail": detail, "error": detail}
