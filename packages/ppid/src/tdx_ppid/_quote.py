"""The PPID of a TDX quote and the PCK certificate chain it carries.

Nothing here verifies a signature: these values are trustworthy only once tdx-verify has verified
the quote and its PCK chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from tdx_ppid._errors import PpidError
from tdx_ppid._extension import parse_sgx_extension
from tdx_quote import (
    CertificationData,
    CertificationDataType,
    PpidCertData,
    QeReportCertData,
    Quote,
)

PemLoader = Callable[[int, bytes], x509.Certificate]
"""Loads certificate `index` (0 the leaf) of a chain from its exact PEM block bytes, as
`x509.load_pem_x509_certificate` does (and raising what it raises): a caller may return a
certificate it loaded earlier from the same bytes."""

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


class PpidKind(StrEnum):
    """Where the PPID came from, which fixes its form."""

    CLEARTEXT = "cleartext"  # type 1: the 16-byte PPID
    RSA2048_ENCRYPTED = "rsa2048-encrypted"  # type 2: RSA-OAEP ciphertext, 256 bytes
    RSA3072_ENCRYPTED = "rsa3072-encrypted"  # type 3: RSA-OAEP ciphertext, 384 bytes
    PCK_CERTIFICATE = "pck-certificate"  # types 4/5: 16-byte PPID of the PCK leaf's extension


_PPID_SIZES = {
    PpidKind.CLEARTEXT: 16,
    PpidKind.RSA2048_ENCRYPTED: 256,
    PpidKind.RSA3072_ENCRYPTED: 384,
    PpidKind.PCK_CERTIFICATE: 16,
}

_PPID_CERT_DATA_KINDS: dict[int, PpidKind] = {
    CertificationDataType.PPID_CLEARTEXT: PpidKind.CLEARTEXT,
    CertificationDataType.PPID_RSA2048_ENCRYPTED: PpidKind.RSA2048_ENCRYPTED,
    CertificationDataType.PPID_RSA3072_ENCRYPTED: PpidKind.RSA3072_ENCRYPTED,
}


@dataclass(frozen=True, slots=True)
class Ppid:
    """A PPID as the quote carries it; `value` has the size its `kind` fixes."""

    kind: PpidKind
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PpidKind):
            raise PpidError(f"Ppid.kind must be a PpidKind, not {self.kind!r}")
        size = _PPID_SIZES[self.kind]
        if not isinstance(self.value, bytes) or len(self.value) != size:
            got = len(self.value) if isinstance(self.value, bytes) else type(self.value).__name__
            raise PpidError(f"a {self.kind.value} PPID is {size} bytes, got {got}")


def quote_ppid(quote: Quote) -> Ppid:
    """The quote's PPID: from certification data types 1-3 directly, from the PCK leaf's SGX
    extension for types 4 and 5, and from the data nested in type 6."""
    return _ppid_of(quote.signature_data.certification_data, nested=False)


def pck_chain_from_quote(quote: Quote, *, load: PemLoader | None = None) -> list[x509.Certificate]:
    """The PCK certificate chain of a quote (type 5, or type 5 nested in type 6), leaf first.
    `load` (default: cryptography's PEM loader) reads each certificate's PEM block."""
    data = quote.signature_data.certification_data
    if data.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
        data = _qe_report_cert_data(data).certification_data
    if data.cert_type != CertificationDataType.PCK_CERT_CHAIN:
        raise PpidError(
            f"certification data {_type_name(data.cert_type)} carries no PCK certificate chain "
            "(type 5 expected)"
        )
    return _load_pem_certificates(_blob(data), "PCK certificate chain (type 5)", load)


def _ppid_of(data: CertificationData, *, nested: bool) -> Ppid:
    cert_type = data.cert_type
    kind = _PPID_CERT_DATA_KINDS.get(cert_type)
    if kind is not None:
        if not isinstance(data.body, PpidCertData):
            raise PpidError(f"certification data {_type_name(cert_type)} has no PPID body")
        size = _PPID_SIZES[kind]
        if len(data.body.ppid) != size:
            raise PpidError(
                f"certification data {_type_name(cert_type)}: the PPID is {len(data.body.ppid)} "
                f"bytes, {size} expected"
            )
        return Ppid(kind, data.body.ppid)
    if cert_type == CertificationDataType.PCK_LEAF_CERT:
        certs = _load_pem_certificates(_blob(data), "PCK leaf certificate (type 4)")
        if len(certs) != 1:
            raise PpidError(
                f"PCK leaf certificate (type 4): holds {len(certs)} certificates, not 1"
            )
        return Ppid(PpidKind.PCK_CERTIFICATE, parse_sgx_extension(certs[0]).ppid)
    if cert_type == CertificationDataType.PCK_CERT_CHAIN:
        certs = _load_pem_certificates(_blob(data), "PCK certificate chain (type 5)")
        return Ppid(PpidKind.PCK_CERTIFICATE, parse_sgx_extension(certs[0]).ppid)
    if cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA and not nested:
        return _ppid_of(_qe_report_cert_data(data).certification_data, nested=True)
    raise PpidError(f"certification data {_type_name(cert_type)} carries no PPID")


def _qe_report_cert_data(data: CertificationData) -> QeReportCertData:
    if not isinstance(data.body, QeReportCertData):
        raise PpidError("certification data type 6 has no QE report certification data body")
    return data.body


def _blob(data: CertificationData) -> bytes:
    if not isinstance(data.body, bytes):
        raise PpidError(f"certification data {_type_name(data.cert_type)} has no PEM body")
    return data.body


def _type_name(cert_type: int) -> str:
    try:
        return f"type {int(cert_type)} ({CertificationDataType(cert_type).name})"
    except ValueError:
        return f"type {cert_type!r}"


def _load_pem(index: int, block: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(block)


def _load_pem_certificates(
    blob: bytes, where: str, load: PemLoader | None = None
) -> list[x509.Certificate]:
    """Load concatenated PEM certificates, in order. Only whitespace may surround them, and NUL
    bytes may end the blob (the quoting enclave writes a C string)."""
    text = blob.rstrip(b"\x00")
    certs: list[x509.Certificate] = []
    pos = 0
    while True:
        begin = text.find(_PEM_BEGIN, pos)
        if begin < 0:
            break
        if text[pos:begin].strip():
            raise PpidError(f"{where}: unexpected data before certificate {len(certs) + 1}")
        end = text.find(_PEM_END, begin)
        if end < 0:
            raise PpidError(f"{where}: certificate {len(certs) + 1} has no END line")
        end += len(_PEM_END)
        try:
            certs.append((load or _load_pem)(len(certs), text[begin:end]))
        except (ValueError, x509.InvalidVersion) as exc:
            raise PpidError(
                f"{where}: certificate {len(certs) + 1} is not a valid PEM X.509 certificate"
            ) from exc
        pos = end
    if text[pos:].strip():
        raise PpidError(f"{where}: unexpected data after the last certificate")
    if not certs:
        raise PpidError(f"{where}: holds no certificate")
    return certs
