"""Typed values of a TDX quote, as returned by `parse_quote` and taken by `build_quote`.

Field sizes follow Intel's "TDX DCAP Quoting Library API" (quote format v4 and v5). All byte
fields are exact-length `bytes`; integers are unsigned little-endian on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from tdx_quote._errors import QuoteFormatError


class TeeType(IntEnum):
    SGX = 0x00000000
    TDX = 0x00000081


class AttestationKeyType(IntEnum):
    ECDSA_P256 = 2
    ECDSA_P384 = 3


class BodyType(IntEnum):
    """Body descriptor of a v5 quote (v4 quotes always carry a TD report 1.0)."""

    SGX_ENCLAVE_REPORT = 1
    TD_REPORT_10 = 2
    TD_REPORT_15 = 3


class CertificationDataType(IntEnum):
    PPID_CLEARTEXT = 1
    PPID_RSA2048_ENCRYPTED = 2
    PPID_RSA3072_ENCRYPTED = 3
    PCK_LEAF_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERTIFICATION_DATA = 6
    PLATFORM_MANIFEST = 7


@dataclass(frozen=True, slots=True)
class Header:
    """The 48-byte quote header."""

    version: int  # 4 or 5
    attestation_key_type: int  # AttestationKeyType, 2 for ECDSA-256-with-P-256
    tee_type: int  # TeeType.TDX for every quote this library accepts
    qe_svn: int  # u16
    pce_svn: int  # u16
    qe_vendor_id: bytes  # 16
    user_data: bytes  # 20


@dataclass(frozen=True, slots=True)
class TdReport10:
    """TD report body 1.0 (584 bytes): the TD's measurements and report_data."""

    tee_tcb_svn: bytes  # 16
    mr_seam: bytes  # 48
    mr_signer_seam: bytes  # 48
    seam_attributes: bytes  # 8
    td_attributes: bytes  # 8
    xfam: bytes  # 8
    mr_td: bytes  # 48
    mr_config_id: bytes  # 48
    mr_owner: bytes  # 48
    mr_owner_config: bytes  # 48
    rtmr0: bytes  # 48
    rtmr1: bytes  # 48
    rtmr2: bytes  # 48
    rtmr3: bytes  # 48
    report_data: bytes  # 64

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def debug(self) -> bool:
        """TUD.DEBUG: bit 0 of the first byte of td_attributes."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True, slots=True)
class TdReport15(TdReport10):
    """TD report body 1.5 (648 bytes): 1.0 followed by tee_tcb_svn2 and mr_service_td."""

    tee_tcb_svn2: bytes  # 16
    mr_service_td: bytes  # 48


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """The 384-byte SGX report body of the Quoting Enclave (the QE report)."""

    cpu_svn: bytes  # 16
    misc_select: int  # u32
    reserved1: bytes  # 28
    attributes: bytes  # 16
    mr_enclave: bytes  # 32
    reserved2: bytes  # 32
    mr_signer: bytes  # 32
    reserved3: bytes  # 96
    isv_prod_id: int  # u16
    isv_svn: int  # u16
    reserved4: bytes  # 60
    report_data: bytes  # 64


@dataclass(frozen=True, slots=True)
class PpidCertData:
    """Certification data types 1, 2 and 3: the PPID (clear 16 bytes, or RSA-OAEP encrypted
    with RSA-2048 / RSA-3072: 256 / 384 bytes) with the platform's CPUSVN, PCESVN and PCE-ID."""

    ppid: bytes
    cpu_svn: bytes  # 16
    pce_svn: int  # u16
    pce_id: int  # u16


@dataclass(frozen=True, slots=True)
class QeReportCertData:
    """Certification data type 6: the QE report, its ECDSA signature by the PCK key, the QE
    authentication data, and the nested certification data (type 5 in practice)."""

    qe_report: EnclaveReport
    qe_report_signature: bytes  # 64: r || s, big-endian each
    qe_auth_data: bytes  # u16-length-prefixed on the wire
    certification_data: CertificationData


@dataclass(frozen=True, slots=True)
class CertificationData:
    """A typed certification data block. `body` is:
    - `PpidCertData` for types 1-3,
    - `bytes` for type 4 (PCK leaf), 5 (PEM chain: leaf, intermediate, root) and 7 (manifest),
    - `QeReportCertData` for type 6.
    """

    cert_type: int  # CertificationDataType
    body: PpidCertData | QeReportCertData | bytes


@dataclass(frozen=True, slots=True)
class QuoteSignatureData:
    """ECDSA quote signature data (v4: the auth data block)."""

    signature: bytes  # 64: r || s of the ECDSA-P256 signature over header || body
    attestation_key: bytes  # 64: x || y of the P-256 attestation public key
    certification_data: CertificationData


@dataclass(frozen=True, slots=True)
class Quote:
    """A TDX quote (v4 or v5). `body_type` is TD_REPORT_10 for v4."""

    header: Header
    body_type: int  # BodyType
    body: TdReport10 | TdReport15
    signature_data: QuoteSignatureData
    # The exact bytes covered by the quote signature (header, v5 body descriptor, body).
    # Filled in by parse_quote; ignored by build_quote, which recomputes it.
    signed_bytes: bytes = b""

    @property
    def qe_report_cert_data(self) -> QeReportCertData:
        """The type-6 certification data; raises QuoteFormatError when absent."""
        body = self.signature_data.certification_data.body
        if not isinstance(body, QeReportCertData):
            raise QuoteFormatError(
                "certification_data.cert_type",
                "expected QE report certification data (type 6)",
            )
        return body
