"""The attested certificate: made in the TD (`build_certificate`), parsed and checked by a
client (`parse_attested_certificate`, `check_validity`)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tdx_attested_tls._claims import Claims, decode_evidence, encode_evidence, report_data_for
from tdx_attested_tls._errors import (
    BindingError,
    CertificateExpired,
    CertificateFormatError,
    CertificateNotYetValid,
)
from tdx_quote import QuoteFormatError, parse_quote

__all__ = [
    "EVIDENCE_OID",
    "AttestedCertificate",
    "build_certificate",
    "check_validity",
    "parse_attested_certificate",
    "spki_der_of",
]

EVIDENCE_OID: Final = x509.ObjectIdentifier("2.23.133.5.4.9")
DEFAULT_COMMON_NAME: Final = "tdx-identity attested TLS"
MAX_CERTIFICATE_SIZE: Final = 64 * 1024


def spki_der_of(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of an EC key (uncompressed point, as certificates carry)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(names)


def build_certificate(
    tls_key: ec.EllipticCurvePrivateKey,
    claims: Claims,
    quote: bytes,
    *,
    hostnames: Sequence[str],
    not_before: datetime,
    not_after: datetime,
    common_name: str = DEFAULT_COMMON_NAME,
) -> x509.Certificate:
    """A self-signed certificate of `tls_key` (EC P-256) carrying `quote` and `claims` in the
    non-critical extension 2.23.133.5.4.9. Refuses (`BindingError`) claims that do not bind the
    key, an instance claim without the instance key's valid signature, and a quote whose
    report_data is not `report_data_for(claims.encode())`; `ValueError` for another curve, no
    hostname, or an empty validity window. `not_before`/`not_after` must be timezone-aware."""
    if not isinstance(tls_key.curve, ec.SECP256R1):
        raise ValueError("the TLS key must be EC P-256")
    if not hostnames:
        raise ValueError("give at least one hostname or IP address for the certificate")
    if not_before.tzinfo is None or not_after.tzinfo is None or not_after <= not_before:
        raise ValueError("the validity window must be timezone-aware and not empty")
    spki = spki_der_of(tls_key)
    if not claims.binds(spki):
        raise BindingError("the claims bind another public key than the TLS key's")
    claims.check_instance_binding()
    buffer = claims.encode()
    try:
        report_data = parse_quote(quote).body.report_data
    except QuoteFormatError as exc:
        raise BindingError(f"the quote does not parse: {exc}") from None
    if not hmac.compare_digest(report_data, report_data_for(buffer)):
        raise BindingError("the quote's report_data is not SHA-256(claims-buffer) zero-padded")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = tls_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hostnames), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(EVIDENCE_OID, encode_evidence(quote, buffer)),
            critical=False,
        )
    )
    return builder.sign(tls_key, hashes.SHA256())


@dataclass(frozen=True)
class AttestedCertificate:
    """A certificate whose evidence extension parsed and whose claims bind its key, with a
    quote committing to those claims. The quote itself is NOT verified yet: that is the
    appraisal's job. `der` is the certificate exactly as received; `fingerprint` its SHA-256."""

    der: bytes
    certificate: x509.Certificate
    spki_der: bytes
    quote: bytes
    claims_buffer: bytes
    claims: Claims

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.der).digest()

    @property
    def instance_pubkey(self) -> bytes | None:
        return self.claims.instance_pubkey

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end of element) of the DER element at `offset`."""
    if offset + 2 > len(data):
        raise CertificateFormatError("the certificate's DER is truncated")
    tag, first = data[offset], data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        width = first & 0x7F
        if not 1 <= width <= 4 or offset + width > len(data):
            raise CertificateFormatError("the certificate's DER has a bad length")
        length = int.from_bytes(data[offset : offset + width], "big")
        offset += width
    if offset + length > len(data):
        raise CertificateFormatError("the certificate's DER is truncated")
    return tag, offset, offset + length


def _raw_spki(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded in the TBSCertificate (the hash covers these
    bytes, not a re-encoding of the key)."""
    tag, start, end = _der_element(tbs, 0)
    if tag != 0x30 or end != len(tbs):
        raise CertificateFormatError("the TBSCertificate is not one DER SEQUENCE")
    offset = start
    tag, _, after = _der_element(tbs, offset)
    if tag == 0xA0:  # [0] EXPLICIT version
        offset = after
    # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo
    for _ in range(5):
        _, _, offset = _der_element(tbs, offset)
    tag, _, after = _der_element(tbs, offset)
    if tag != 0x30:
        raise CertificateFormatError("the TBSCertificate has no SubjectPublicKeyInfo")
    return tbs[offset:after]


def parse_attested_certificate(der: bytes) -> AttestedCertificate:
    """Parse `der` and check everything a certificate can say about itself: (1) it is one DER
    X.509 certificate; (2) it carries exactly one extension 2.23.133.5.4.9, non-critical;
    (3) its value is CBOR tag 60000 [quote, claims-buffer] and the claims parse; (4) the
    claims' pubkey-hash is the hash of the certificate's own SubjectPublicKeyInfo bytes;
    (5) an instance claim carries the instance key's valid signature over that pubkey-hash;
    (6) the quote parses and its report_data is SHA-256(claims-buffer) || 32 zero bytes;
    (7) it is self-signed by that key. Does NOT verify the quote (see `DcapAppraiser`) nor the
    validity window (see `check_validity`)."""
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise CertificateFormatError(f"the certificate exceeds {MAX_CERTIFICATE_SIZE} bytes")
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CertificateFormatError(f"not a DER X.509 certificate: {exc}") from None
    try:
        extensions = cert.extensions
    except x509.DuplicateExtension as exc:
        raise CertificateFormatError(f"the certificate repeats extension {exc.oid}") from None
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateFormatError(f"the certificate's extensions are malformed: {exc}") from None
    found = [ext for ext in extensions if ext.oid == EVIDENCE_OID]
    if not found:
        raise CertificateFormatError(
            "the certificate carries no attestation evidence (extension 2.23.133.5.4.9): "
            "a plain certificate"
        )
    (extension,) = found
    if extension.critical:
        raise CertificateFormatError(
            "the evidence extension 2.23.133.5.4.9 is marked critical; the format defines it "
            "non-critical"
        )
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateFormatError("the evidence extension has an unexpected type")
    quote, claims_buffer = decode_evidence(value.value)
    claims = Claims.decode(claims_buffer)
    spki = _raw_spki(cert.tbs_certificate_bytes)
    if not claims.binds(spki):
        raise BindingError(
            "the claims' pubkey-hash is not the hash of this certificate's public key: "
            "the evidence was made for another key"
        )
    claims.check_instance_binding()
    try:
        report_data = parse_quote(quote).body.report_data
    except QuoteFormatError as exc:
        raise CertificateFormatError(f"the evidence's quote does not parse: {exc}") from None
    if not hmac.compare_digest(report_data, report_data_for(claims_buffer)):
        raise BindingError(
            "the quote's report_data is not SHA-256(claims-buffer) followed by 32 zero bytes: "
            "the quote was made for other claims"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateFormatError(f"the certificate is not validly self-signed: {exc}") from None
    return AttestedCertificate(
        der=bytes(der),
        certificate=cert,
        spki_der=spki,
        quote=quote,
        claims_buffer=claims_buffer,
        claims=claims,
    )


def check_validity(
    certificate: AttestedCertificate, now: datetime, *, leeway: timedelta = timedelta(0)
) -> None:
    """`CertificateNotYetValid` before notBefore (minus `leeway`), `CertificateExpired` after
    notAfter (plus `leeway`). `now` must be timezone-aware."""
    if now < certificate.not_before - leeway:
        raise CertificateNotYetValid(
            f"the certificate is not valid before {certificate.not_before.isoformat()} "
            f"(now {now.isoformat()})"
        )
    if now > certificate.not_after + leeway:
        raise CertificateExpired(
            f"the certificate expired at {certificate.not_after.isoformat()} "
            f"(now {now.isoformat()})"
        )
