"""Parse and build Intel TDX quotes (v4 and v5) from one construct declaration."""

from tdx_quote._codec import (
    MAX_QUOTE_SIZE,
    build_enclave_report,
    build_quote,
    build_signed_region,
    build_td_report,
    parse_enclave_report,
    parse_quote,
)
from tdx_quote._errors import QuoteFormatError
from tdx_quote._model import (
    AttestationKeyType,
    BodyType,
    CertificationData,
    CertificationDataType,
    EnclaveReport,
    Header,
    PpidCertData,
    QeReportCertData,
    Quote,
    QuoteSignatureData,
    TdReport10,
    TdReport15,
    TeeType,
)

__all__ = [
    "MAX_QUOTE_SIZE",
    "AttestationKeyType",
    "BodyType",
    "CertificationData",
    "CertificationDataType",
    "EnclaveReport",
    "Header",
    "PpidCertData",
    "QeReportCertData",
    "Quote",
    "QuoteFormatError",
    "QuoteSignatureData",
    "TdReport10",
    "TdReport15",
    "TeeType",
    "build_enclave_report",
    "build_quote",
    "build_signed_region",
    "build_td_report",
    "parse_enclave_report",
    "parse_quote",
]
