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
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
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
ECDSA_WITH_SHA256 = x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256


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
    """Whether `cert`'s basic constraints say CA; ValueError (as for any malformed certificate)
    when its extensions do not parse or repeat one (RFC 5280: at most one of each)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except x509.DuplicateExtension as exc:
        raise ValueError(f"the certificate repeats extension {exc.oid.dotted_string}") from None
    except x509.UnsupportedGeneralNameType as exc:
        raise ValueError(f"the certificate's extensions are malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    cert: x509.Certificate
    der: bytes
    key: ec.EllipticCurvePublicKey
    info: CaInfo

    def is_same_ca(self, cert: x509.Certificate, der: bytes) -> bool:
        """`cert` (whose DER is `der`) is the pinned root, or a re-issue of it (same name and
        key)."""
        if der == self.der:
            return True
        return cert.subject == self.cert.subject and spki(cert) == self.info.spki

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
            subject_der = tbs_names(cert.tbs_certificate_bytes)[1]
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise RootCaError("root_ca", f"root CA certificate is unusable: {exc}") from None
        if not usable:
            raise RootCaError("root_ca", "root CA certificate is not a CA")
        der = cert.public_bytes(serialization.Encoding.DER)
        info = CaInfo(cert, der, subject_der, key, spki(cert), usable)
        return cls(cert, der, key, info)


def _der_children(der: bytes, what: str) -> list[tuple[int, int]]:
    """(start, end) of each TLV inside the DER SEQUENCE `der` (a structure cryptography has
    already parsed, so it is well formed: one-octet tags, definite lengths)."""
    out: list[tuple[int, int]] = []
    pos, end = 0, len(der)
    first = True
    while pos < end:
        if end - pos < 2:
            raise ValueError(f"{what} is truncated")
        length = der[pos + 1]
        head = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
            head += count
        stop = pos + head + length
        if stop > end or (first and (der[pos] != 0x30 or stop != end)):
            raise ValueError(f"{what} is not one DER SEQUENCE")
        if first:  # step into the outer SEQUENCE
            pos, first = pos + head, False
            continue
        out.append((pos, stop))
        pos = stop
    return out


def tbs_names(tbs: bytes) -> tuple[bytes, bytes]:
    """The exact DER of the issuer and subject Names of a TBSCertificate: SEQUENCE { [0] version
    OPTIONAL, serialNumber, signature, issuer, validity, subject, ... }. Comparing these bytes is
    what RFC 5280 name chaining between DER certificates of one CA amounts to, without building
    cryptography's Python `Name` objects."""
    fields = _der_children(tbs, "TBSCertificate")
    if fields and tbs[fields[0][0]] == 0xA0:
        fields = fields[1:]
    if len(fields) < 6:
        raise ValueError("TBSCertificate has too few fields")
    (i0, i1), (s0, s1) = fields[2], fields[4]
    if tbs[i0] != 0x30 or tbs[s0] != 0x30:
        raise ValueError("TBSCertificate issuer or subject is not a Name")
    return tbs[i0:i1], tbs[s0:s1]


def crl_issuer_der(tbs: bytes) -> bytes:
    """The exact DER of the issuer Name of a TBSCertList: SEQUENCE { version OPTIONAL,
    signature, issuer, ... }."""
    fields = _der_children(tbs, "TBSCertList")
    if fields and tbs[fields[0][0]] == 0x02:
        fields = fields[1:]
    if len(fields) < 3 or tbs[fields[1][0]] != 0x30:
        raise ValueError("TBSCertList has no issuer Name")
    return tbs[fields[1][0] : fields[1][1]]


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


@dataclass(frozen=True, slots=True)
class CaInfo:
    """What checking the certificates a CA certificate issued needs, read once from its exact
    DER (`ca_info`): its parsed form, public key, subject (as DER), SubjectPublicKeyInfo and
    whether it is a CA. Nothing here is trusted before a chain through it has verified."""

    cert: x509.Certificate
    der: bytes
    subject_der: bytes  # the exact DER of the subject Name, as in the certificate
    key: CertificatePublicKeyTypes
    spki: bytes
    is_ca: bool


def ca_info(cert: x509.Certificate, der: bytes, infos: CaInfos) -> CaInfo:
    """The `CaInfo` of `cert` (whose DER is `der`), from `infos` when read before."""
    info = infos.get(der)
    if info is None:
        key = cert.public_key()
        info = CaInfo(
            cert,
            der,
            tbs_names(cert.tbs_certificate_bytes)[1],
            key,
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            is_ca(cert),
        )
        infos.put(der, info)
    return info


def check_issued_by(cert: x509.Certificate, issuer: CaInfo) -> None:
    """What `cert.verify_directly_issued_by(issuer.cert)` checks (the issuer name is the
    issuer's subject, the signature verifies under its key), with the issuer's key and name read
    once: ECDSA-with-SHA256 under an EC key here, anything else through cryptography. Raises
    ValueError, TypeError, InvalidSignature or UnsupportedAlgorithm as that does."""
    key = issuer.key
    if cert.signature_algorithm_oid != ECDSA_WITH_SHA256 or not isinstance(
        key, ec.EllipticCurvePublicKey
    ):
        cert.verify_directly_issued_by(issuer.cert)
        return
    tbs = cert.tbs_certificate_bytes
    if tbs_names(tbs)[0] != issuer.subject_der:
        raise ValueError("the certificate's issuer name is not the issuer's subject")
    key.verify(cert.signature, tbs, ECDSA_SHA256)


def verify_to_root(
    certs: list[x509.Certificate],
    root: TrustedRoot,
    *,
    step: str,
    names: tuple[str, ...],
    error: type[VerificationError],
    root_links: SignedBy,
    infos: CaInfos,
    ders: list[bytes] | None = None,
) -> tuple[list[x509.Certificate], list[CaInfo]]:
    """Check that `certs` (leaf first; the root itself may end the list) chain to the pinned root.

    `names` names the certificates leaf first (without the root); the chain must have exactly
    that many certificates besides the root. Every issuer must be a CA. Returns the chain
    without the root, and the `CaInfo` of each certificate's issuer (the last one the root's).
    Links to the root already in `root_links` (by the exact bytes of both certificates) are not
    verified again; links to the root that verify are added to it (a handful per root: Intel's
    CA and signing certificates). A link below an intermediate (a PCK leaf, one per machine) is
    verified on every call. Validity windows and revocation are the caller's, on every use.
    `ders`, when given, are the DER encodings of `certs` (read once by the caller).
    """
    chain = list(certs)
    if ders is None:
        ders = [cert.public_bytes(serialization.Encoding.DER) for cert in chain]
    if len(ders) != len(chain):
        raise ValueError("one DER encoding per certificate is needed")
    if chain and root.is_same_ca(chain[-1], ders[-1]):
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
    issuers: list[CaInfo] = []
    for i, cert in enumerate(chain):
        to_root = i + 1 == len(chain)
        issuer = root.info if to_root else ca_info(chain[i + 1], ders[i + 1], infos)
        issuers.append(issuer)
        issuer_name = "pinned root CA" if to_root else names[i + 1]
        link = (ders[i], issuer.der)
        if to_root and root_links.get(link):
            continue
        if not to_root and not issuer.is_ca:
            raise error(step, f"{issuer_name} is not a CA certificate")
        if not signature_bits_are_canonical(ders[i], cert.signature):
            raise error(step, f"{names[i]} signature is not a canonical DER BIT STRING")
        try:
            check_issued_by(cert, issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            if to_root:
                raise RootCaError(
                    step,
                    f"{names[i]} is not issued by the pinned root CA "
                    f"(issuer {cert.issuer.rfc4514_string()})",
                ) from None
            raise error(step, f"{names[i]} is not signed by the {issuer_name}") from None
        if to_root:
            root_links.put(link, True)
    return chain, issuers


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    issuer: x509.Name
    issuer_der: bytes  # the exact DER of `issuer`, as in the CRL
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
    except (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError) as exc:
        raise CrlError(step, f"{item} extensions are malformed: {exc}") from None
    return VerifiedCrl(
        crl.issuer,
        crl_issuer_der(crl.tbs_certlist_bytes),
        frozenset(r.serial_number for r in crl),
        window,
        number,
    )


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

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


SignedBy = BoundedCache[tuple[bytes, bytes], bool]
"""(certificate DER, pinned root DER) pairs whose link `verify_to_root` has checked (signature
BIT STRING canonical, issuer name and signature valid under the root's key): the PCK CA in
every quote of a fleet and in the PCK CRL issuer chain, the TCB signing certificate of the TCB
info and of the QE identity, each verified once."""

CaInfos = BoundedCache[bytes, CaInfo]
"""`CaInfo` by the exact DER it was read from."""
