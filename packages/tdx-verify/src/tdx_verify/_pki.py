"""X.509 plumbing for DCAP: chains to the pinned root, CRLs, validity windows, raw signatures."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tdx_verify._errors import (
    CollateralExpiredError,
    CollateralFormatError,
    CrlError,
    RevokedError,
    RootCaError,
    VerificationError,
)

ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Window:
    """A validity window of one named item; `end_exclusive` for CRLs (expired at nextUpdate)."""

    step: str
    item: str
    start: float
    end: float
    end_exclusive: bool
    error: type[VerificationError]

    def check(self, now: float) -> None:
        if now < self.start:
            raise self.error(
                self.step, f"{self.item} is not valid before {iso(self.start)} (now {iso(now)})"
            )
        if now > self.end or (self.end_exclusive and now >= self.end):
            raise self.error(self.step, f"{self.item} expired at {iso(self.end)} (now {iso(now)})")


def check_windows(windows: tuple[Window, ...], now: float) -> None:
    for window in windows:
        window.check(now)


def cert_window(
    cert: x509.Certificate, step: str, item: str, error: type[VerificationError]
) -> Window:
    return Window(
        step,
        item,
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
        False,
        error,
    )


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def p256_key(cert: x509.Certificate, step: str, what: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise VerificationError(step, f"{what} does not have a P-256 key")
    return key


def raw_signature_to_der(signature: bytes) -> bytes:
    """ECDSA r || s (32 bytes each, big-endian) as the DER SEQUENCE cryptography verifies."""
    if len(signature) != 64:
        raise ValueError(f"signature is {len(signature)} bytes, expected 64 (r || s)")
    return encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )


def verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` (r || s) is a valid ECDSA-P256-SHA256 signature of `data`."""
    try:
        key.verify(raw_signature_to_der(signature), data, ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    cert: x509.Certificate
    der: bytes
    key: ec.EllipticCurvePublicKey

    def is_same_ca(self, cert: x509.Certificate) -> bool:
        """`cert` is the pinned root, or a re-issue of it (same name and key)."""
        if cert.public_bytes(serialization.Encoding.DER) == self.der:
            return True
        return cert.subject == self.cert.subject and spki(cert) == spki(self.cert)

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustedRoot:
        """Load and sanity-check the pinned root: self-signed P-256 CA."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except (ValueError, x509.InvalidVersion) as exc:
            raise RootCaError("root_ca", f"root CA is not a PEM certificate: {exc}") from None
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise RootCaError("root_ca", "root CA is not self-signed") from None
        try:
            usable = is_ca(cert)
            key = p256_key(cert, "root_ca", "root CA")
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise RootCaError("root_ca", f"root CA certificate is unusable: {exc}") from None
        if not usable:
            raise RootCaError("root_ca", "root CA certificate is not a CA")
        return cls(cert, cert.public_bytes(serialization.Encoding.DER), key)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def signature_bits_are_canonical(der: bytes, signature: bytes) -> bool:
    """The signed object's DER ends with its signature as a BIT STRING with 0 unused bits.

    A certificate or CRL ends with `signatureValue BIT STRING`; cryptography ignores the
    unused-bits octet, which would let one byte change without breaking the signature."""
    return der.endswith(b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature)


def load_pem_chain(text: str | bytes, step: str, what: str) -> list[x509.Certificate]:
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CollateralFormatError(step, f"{what} is not a PEM certificate chain: {exc}") from None
    return certs


def verify_to_root(
    certs: list[x509.Certificate],
    root: TrustedRoot,
    *,
    step: str,
    names: tuple[str, ...],
    error: type[VerificationError],
    signed_by: SignedBy,
) -> list[x509.Certificate]:
    """Check that `certs` (leaf first; the root itself may end the list) chain to the pinned root.

    `names` names the certificates leaf first (without the root); the chain must have exactly
    that many certificates besides the root. Every issuer must be a CA. Returns the chain
    without the root. Links already in `signed_by` (by the exact bytes of both certificates)
    are not verified again; links that verify are added to it. Validity windows and revocation
    are the caller's, on every use.
    """
    chain = list(certs)
    if chain and root.is_same_ca(chain[-1]):
        chain.pop()
    elif chain and len(chain) == len(names) + 1 and chain[-1].issuer == chain[-1].subject:
        raise RootCaError(
            step,
            f"chain ends at {chain[-1].subject.rfc4514_string()}, which is not the pinned root CA",
        )
    if len(chain) != len(names):
        raise error(
            step,
            f"chain has {len(chain)} certificate(s) below the root, expected {len(names)} "
            f"({', '.join(names)})",
        )
    ders = [cert.public_bytes(serialization.Encoding.DER) for cert in chain]
    for i, cert in enumerate(chain):
        issuer = chain[i + 1] if i + 1 < len(chain) else root.cert
        issuer_name = names[i + 1] if i + 1 < len(chain) else "pinned root CA"
        link = (ders[i], ders[i + 1] if i + 1 < len(chain) else root.der)
        if signed_by.get(link):
            continue
        if i + 1 < len(chain) and not is_ca(issuer):
            raise error(step, f"{issuer_name} is not a CA certificate")
        if not signature_bits_are_canonical(ders[i], cert.signature):
            raise error(step, f"{names[i]} signature is not a canonical DER BIT STRING")
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            if i + 1 == len(chain):
                raise RootCaError(
                    step,
                    f"{names[i]} is not issued by the pinned root CA "
                    f"(issuer {cert.issuer.rfc4514_string()})",
                ) from None
            raise error(step, f"{names[i]} is not signed by the {issuer_name}") from None
        signed_by.put(link, True)
    return chain


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    issuer: x509.Name
    revoked: frozenset[int]
    window: Window
    number: int | None  # the CRL number extension; None when the CRL has none


def verify_crl(
    der: bytes,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePublicKey,
    *,
    step: str,
    item: str,
) -> VerifiedCrl:
    """Parse a DER CRL, check it is signed by `issuer`, and collect its revoked serials."""
    try:
        crl = x509.load_der_x509_crl(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CrlError(step, f"{item} is not a DER CRL: {exc}") from None
    if not signature_bits_are_canonical(der, crl.signature):
        raise CrlError(step, f"{item} signature is not a canonical DER BIT STRING")
    if crl.issuer != issuer.subject:
        raise CrlError(
            step,
            f"{item} is issued by {crl.issuer.rfc4514_string()}, "
            f"expected {issuer.subject.rfc4514_string()}",
        )
    if not crl.is_signature_valid(issuer_key):
        raise CrlError(step, f"{item} signature does not verify")
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlError(step, f"{item} has no nextUpdate")
    window = Window(
        step,
        item,
        crl.last_update_utc.timestamp(),
        next_update.timestamp(),
        True,
        CollateralExpiredError,
    )
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return VerifiedCrl(crl.issuer, frozenset(r.serial_number for r in crl), window, number)


def check_not_revoked(
    cert_serial: int, revoked: frozenset[int], *, step: str, what: str, crl: str
) -> None:
    if cert_serial in revoked:
        raise RevokedError(step, f"{what} (serial {cert_serial:#x}) is revoked by the {crl}")


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A small thread-safe LRU map; only successfully verified results are put in."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


SignedBy = BoundedCache[tuple[bytes, bytes], bool]
"""(certificate DER, issuer DER) pairs whose link `verify_to_root` has checked (issuer a CA,
signature BIT STRING canonical, signature valid under the issuer's key): the same certificate
under the same issuer (the PCK CA in every quote of a fleet, and in the PCK CRL issuer chain;
the TCB signing certificate of the TCB info and of the QE identity) is verified once."""
