"""Full Intel DCAP verification of TDX quotes, a PCCS v4 client and a verified-collateral cache.

verifier = Verifier()                       # Intel's SGX Root CA pinned, default Policy
verified = verifier.verify(quote_bytes, Collateral.from_json(text), now=datetime.now(UTC))
"""

from tdx_verify._allowlist import (
    ADVISORY_ID,
    MAX_TCB_GRACE_DAYS,
    MEASUREMENT_LEN,
    PINNED_RTMRS,
    AllowlistError,
    PolicySettingError,
    missing_td_image_pins,
    parse_denied_advisories,
    parse_mrtd_allowlist,
    parse_rtmr_allowlist,
    parse_tcb_grace_days,
    require_td_image_pins,
    split_items,
)
from tdx_verify._collateral import Collateral
from tdx_verify._errors import (
    AdvisoryDenied,
    CollateralExpiredError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralSignatureError,
    CrlError,
    DebugTdRejected,
    MeasurementRejected,
    PccsError,
    PckChainError,
    PolicyError,
    QeIdentityError,
    QeReportError,
    QuoteParseError,
    QuoteSignatureError,
    RevokedError,
    RootCaError,
    TcbLevelError,
    TcbStatusRejected,
    TdAttributesRejected,
    TdxVerifyError,
    VerificationError,
)
from tdx_verify._pccs import CollateralCache, PccsClient
from tdx_verify._policy import DEFAULT_ACCEPTED_TCB_STATUSES, Policy
from tdx_verify._root import INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256
from tdx_verify._tcb import KNOWN_TCB_STATUSES
from tdx_verify._verifier import VerifiedQuote, Verifier

__all__ = [
    "ADVISORY_ID",
    "DEFAULT_ACCEPTED_TCB_STATUSES",
    "INTEL_SGX_ROOT_CA_PEM",
    "INTEL_SGX_ROOT_CA_SHA256",
    "KNOWN_TCB_STATUSES",
    "MAX_TCB_GRACE_DAYS",
    "MEASUREMENT_LEN",
    "PINNED_RTMRS",
    "AdvisoryDenied",
    "AllowlistError",
    "Collateral",
    "CollateralCache",
    "CollateralExpiredError",
    "CollateralFormatError",
    "CollateralMismatchError",
    "CollateralSignatureError",
    "CrlError",
    "DebugTdRejected",
    "MeasurementRejected",
    "PccsClient",
    "PccsError",
    "PckChainError",
    "Policy",
    "PolicyError",
    "PolicySettingError",
    "QeIdentityError",
    "QeReportError",
    "QuoteParseError",
    "QuoteSignatureError",
    "RevokedError",
    "RootCaError",
    "TcbLevelError",
    "TcbStatusRejected",
    "TdAttributesRejected",
    "TdxVerifyError",
    "VerificationError",
    "VerifiedQuote",
    "Verifier",
    "missing_td_image_pins",
    "parse_denied_advisories",
    "parse_mrtd_allowlist",
    "parse_rtmr_allowlist",
    "parse_tcb_grace_days",
    "require_td_image_pins",
    "split_items",
]
