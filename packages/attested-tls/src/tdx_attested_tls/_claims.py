"""The interoperable evidence (TCG DICE conceptual message wrapper, as Gramine's RA-TLS and
the CCC interoperable RA-TLS documents define it) and its claims buffer, in CBOR.

evidence      = #6.60000([quote: bstr, claims-buffer: bstr])
claims-buffer = bstr .cbor {"pubkey-hash": bstr .cbor [hash-alg-id: uint, hash: bstr],
                            ? "nonce": bstr,
                            ? ("tdx-instance-pubkey": bstr .size 32,
                               "tdx-instance-signature": bstr .size 64)}
report_data   = SHA-256(claims-buffer) || 32 zero bytes
tdx-instance-signature = Ed25519(instance key, "tdx-attested-tls/instance-binding/v1\n"
                                               || hash-alg-id (1 byte) || hash)

The instance key's signature proves that the TD holding the registered instance key made this
TLS key's claims; the quote alone only proves what some TD of that image says about itself.

Encoding is deterministic (RFC 8949 core deterministic: shortest lengths, definite lengths,
map keys sorted by their encoding). Decoding is strict: nothing may follow an item, maps and
arrays must be definite, map keys unique text; unknown claims are ignored (as Gramine does),
but they are still covered by report_data since the whole buffer is hashed."""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tdx_attested_tls._errors import BindingError, CertificateFormatError

__all__ = [
    "EVIDENCE_CBOR_TAG",
    "INSTANCE_BINDING_DOMAIN",
    "INSTANCE_PUBKEY_CLAIM",
    "INSTANCE_SIGNATURE_CLAIM",
    "NONCE_CLAIM",
    "PUBKEY_HASH_CLAIM",
    "Claims",
    "HashAlg",
    "claims_for",
    "decode_evidence",
    "encode_evidence",
    "instance_binding_message",
    "report_data_for",
]

EVIDENCE_CBOR_TAG: Final = 60000
PUBKEY_HASH_CLAIM: Final = "pubkey-hash"
NONCE_CLAIM: Final = "nonce"
INSTANCE_PUBKEY_CLAIM: Final = "tdx-instance-pubkey"
INSTANCE_SIGNATURE_CLAIM: Final = "tdx-instance-signature"
INSTANCE_BINDING_DOMAIN: Final = b"tdx-attested-tls/instance-binding/v1\n"
INSTANCE_PUBKEY_SIZE: Final = 32
INSTANCE_SIGNATURE_SIZE: Final = 64
MAX_NONCE_SIZE: Final = 64


class HashAlg(IntEnum):
    """IANA Named Information hash algorithm identifiers the format allows."""

    SHA256 = 1
    SHA384 = 7
    SHA512 = 8

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(_HASH_NAMES[self], data).digest()

    @property
    def size(self) -> int:
        return _HASH_SIZES[self]


_HASH_NAMES: Final = {HashAlg.SHA256: "sha256", HashAlg.SHA384: "sha384", HashAlg.SHA512: "sha512"}
_HASH_SIZES: Final = {HashAlg.SHA256: 32, HashAlg.SHA384: 48, HashAlg.SHA512: 64}

_DECODE_ERRORS: Final = (
    cbor2.CBORError,
    ValueError,
    TypeError,
    LookupError,
    OverflowError,
    RecursionError,
    EOFError,
    MemoryError,
)


def _dumps(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _loads_exact(data: bytes, what: str) -> object:
    """One CBOR item that is the whole of `data`."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except _DECODE_ERRORS as exc:
        raise CertificateFormatError(f"the {what} is not well-formed CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise CertificateFormatError(
            f"the {what} has {len(data) - stream.tell()} bytes after its CBOR item"
        )
    return value


def _definite_count(data: bytes, major: int, what: str) -> int:
    """The element count in the head of the definite map/array `data` starts with."""
    if not data or data[0] >> 5 != major:
        kind = "map" if major == 5 else "array"
        raise CertificateFormatError(f"the {what} is not a CBOR {kind}")
    info = data[0] & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or len(data) < 1 + width:
        raise CertificateFormatError(f"the {what} is not of definite length")
    return int.from_bytes(data[1 : 1 + width], "big")


def instance_binding_message(hash_alg: HashAlg, pubkey_hash: bytes) -> bytes:
    """What the instance key signs: the domain, the hash algorithm's id (one byte), then the
    hash of the TLS key's SubjectPublicKeyInfo."""
    return INSTANCE_BINDING_DOMAIN + bytes([int(hash_alg)]) + pubkey_hash


@dataclass(frozen=True)
class Claims:
    """The claims of one certificate: the hash of its SubjectPublicKeyInfo under `hash_alg`,
    and optionally a nonce and the TD's instance public key (32 bytes, ed25519) with its
    signature over `instance_binding_message(hash_alg, pubkey_hash)` (64 bytes). A value may
    carry a wrong or missing signature (it is what a certificate says);
    `check_instance_binding` is the check."""

    hash_alg: HashAlg
    pubkey_hash: bytes
    instance_pubkey: bytes | None = None
    nonce: bytes | None = None
    instance_signature: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.pubkey_hash) != HashAlg(self.hash_alg).size:
            raise ValueError(
                f"a {HashAlg(self.hash_alg).name} pubkey-hash is {self.hash_alg.size} bytes, "
                f"not {len(self.pubkey_hash)}"
            )
        if self.instance_pubkey is not None and len(self.instance_pubkey) != INSTANCE_PUBKEY_SIZE:
            raise ValueError(f"the instance public key is {INSTANCE_PUBKEY_SIZE} bytes")
        if self.nonce is not None and not 1 <= len(self.nonce) <= MAX_NONCE_SIZE:
            raise ValueError(f"a nonce is 1 to {MAX_NONCE_SIZE} bytes")
        if self.instance_signature is not None:
            if self.instance_pubkey is None:
                raise ValueError("an instance signature without an instance public key")
            if len(self.instance_signature) != INSTANCE_SIGNATURE_SIZE:
                raise ValueError(f"the instance signature is {INSTANCE_SIGNATURE_SIZE} bytes")

    def check_instance_binding(self) -> None:
        """`BindingError` unless the instance claim, when there is one, carries the instance
        key's valid signature over this pubkey-hash (then the instance key's holder made these
        claims for this TLS key). Claims naming no instance pass: they claim nothing of it."""
        if self.instance_pubkey is None:
            return
        if self.instance_signature is None:
            raise BindingError(
                'the claims name an instance key but carry no "tdx-instance-signature": '
                "nothing proves the instance key's holder made them"
            )
        message = instance_binding_message(self.hash_alg, self.pubkey_hash)
        try:
            Ed25519PublicKey.from_public_bytes(self.instance_pubkey).verify(
                self.instance_signature, message
            )
        except (InvalidSignature, ValueError):
            raise BindingError(
                "the instance key's signature does not verify over this certificate's "
                "pubkey-hash: the instance key's holder did not make these claims"
            ) from None

    def binds(self, spki_der: bytes) -> bool:
        """Whether `pubkey-hash` is the hash of `spki_der` (constant time)."""
        return hmac.compare_digest(self.hash_alg.digest(spki_der), self.pubkey_hash)

    def encode(self) -> bytes:
        """The claims buffer, deterministically encoded."""
        entry = _dumps([int(self.hash_alg), self.pubkey_hash])
        claims: dict[str, bytes] = {PUBKEY_HASH_CLAIM: entry}
        if self.nonce is not None:
            claims[NONCE_CLAIM] = self.nonce
        if self.instance_pubkey is not None:
            claims[INSTANCE_PUBKEY_CLAIM] = self.instance_pubkey
        if self.instance_signature is not None:
            claims[INSTANCE_SIGNATURE_CLAIM] = self.instance_signature
        return _dumps(claims)

    @classmethod
    def decode(cls, buffer: bytes) -> Claims:
        """Parse a claims buffer strictly; `CertificateFormatError` on anything malformed."""
        claims = _loads_exact(buffer, "claims buffer")
        if not isinstance(claims, dict):
            raise CertificateFormatError("the claims buffer is not a CBOR map")
        if _definite_count(buffer, 5, "claims buffer") != len(claims):
            raise CertificateFormatError("the claims map repeats a key")
        if not all(isinstance(key, str) and key for key in claims):
            raise CertificateFormatError("a claim's key is not a non-empty text string")
        entry = claims.get(PUBKEY_HASH_CLAIM)
        if not isinstance(entry, bytes):
            raise CertificateFormatError('the claims have no "pubkey-hash" byte string')
        hash_alg, pubkey_hash = _hash_entry(entry)
        nonce = _optional_bytes(claims, NONCE_CLAIM)
        instance_pubkey = _optional_bytes(claims, INSTANCE_PUBKEY_CLAIM)
        signature = _optional_bytes(claims, INSTANCE_SIGNATURE_CLAIM)
        try:
            return cls(
                hash_alg,
                pubkey_hash,
                instance_pubkey=instance_pubkey,
                nonce=nonce,
                instance_signature=signature,
            )
        except ValueError as exc:
            raise CertificateFormatError(f"the claims are malformed: {exc}") from None


def _optional_bytes(claims: dict[object, object], key: str) -> bytes | None:
    value = claims.get(key)
    if value is None and key not in claims:
        return None
    if not isinstance(value, bytes):
        raise CertificateFormatError(f'the "{key}" claim is not a byte string')
    return value


def _hash_entry(entry: bytes) -> tuple[HashAlg, bytes]:
    value = _loads_exact(entry, "pubkey-hash entry")
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise CertificateFormatError("the pubkey-hash entry is not an array [hash-alg-id, hash]")
    if _definite_count(entry, 4, "pubkey-hash entry") != 2:
        raise CertificateFormatError("the pubkey-hash entry is not of definite length")
    alg, digest = value
    if type(alg) is not int or alg not in {a.value for a in HashAlg}:
        raise CertificateFormatError(
            f"the pubkey-hash algorithm {alg!r} is not sha-256 (1), sha-384 (7) or sha-512 (8)"
        )
    if not isinstance(digest, bytes) or len(digest) != HashAlg(alg).size:
        raise CertificateFormatError(
            f"the pubkey-hash is not a {HashAlg(alg).size}-byte {HashAlg(alg).name} digest"
        )
    return HashAlg(alg), digest


def claims_for(
    spki_der: bytes,
    instance_key: Ed25519PrivateKey | None,
    *,
    hash_alg: HashAlg = HashAlg.SHA256,
    nonce: bytes | None = None,
) -> Claims:
    """The claims binding `spki_der` (the DER SubjectPublicKeyInfo of the TLS key) and the TD's
    instance key: its public key, and its signature over
    `instance_binding_message(hash_alg, H(spki_der))`. `None`: claims naming no instance
    (plain RA-TLS, as Gramine makes it)."""
    pubkey_hash = hash_alg.digest(spki_der)
    if instance_key is None:
        return Claims(hash_alg, pubkey_hash, nonce=nonce)
    return Claims(
        hash_alg,
        pubkey_hash,
        instance_pubkey=instance_key.public_key().public_bytes_raw(),
        nonce=nonce,
        instance_signature=instance_key.sign(instance_binding_message(hash_alg, pubkey_hash)),
    )


def report_data_for(claims_buffer: bytes) -> bytes:
    """The 64-byte report_data a quote must carry for `claims_buffer`:
    SHA-256(claims_buffer) followed by 32 zero bytes."""
    return hashlib.sha256(claims_buffer).digest() + bytes(32)


def encode_evidence(quote: bytes, claims_buffer: bytes) -> bytes:
    """The extension's value: CBOR tag 60000 over [quote, claims_buffer]."""
    return _dumps(cbor2.CBORTag(EVIDENCE_CBOR_TAG, [quote, claims_buffer]))


def decode_evidence(value: bytes) -> tuple[bytes, bytes]:
    """(quote, claims buffer) from the extension's value; `CertificateFormatError` otherwise."""
    item = _loads_exact(value, "evidence extension")
    if not isinstance(item, cbor2.CBORTag) or item.tag != EVIDENCE_CBOR_TAG:
        raise CertificateFormatError(
            f"the evidence extension is not CBOR tag {EVIDENCE_CBOR_TAG} (TEE quote evidence)"
        )
    content = item.value
    if not isinstance(content, list | tuple) or len(content) != 2:
        raise CertificateFormatError("the evidence is not an array [quote, claims-buffer]")
    quote, claims_buffer = content
    if not isinstance(quote, bytes) or not quote:
        raise CertificateFormatError("the evidence's quote is not a non-empty byte string")
    if not isinstance(claims_buffer, bytes) or not claims_buffer:
        raise CertificateFormatError("the evidence's claims buffer is not a non-empty byte string")
    return quote, claims_buffer
