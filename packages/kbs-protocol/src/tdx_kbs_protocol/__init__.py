"""Trustee's KBS protocol (RCAR, version 0.4.0) for TDX, as tdx-identity's key broker speaks it.

Messages (`Request`, `Challenge`, `Attestation`...) parse strictly from decoded JSON and raise
`MessageError`; `runtime_data_binding` is the report_data the quote must carry; resources travel
as Trustee's flattened JWE (`encrypt_resource`, `TeeKeyPair.decrypt`); admin calls carry an
EdDSA JWT (`make_admin_token`, `verify_admin_token`); `IdentityEvidence` is tdx-identity's
additional evidence (a tdx-kbs extension); `KbsClient` is an async httpx client. See README.md.
"""

from tdx_kbs_protocol._admin import AdminClaims, make_admin_token, verify_admin_token
from tdx_kbs_protocol._client import EvidenceProvider, KbsClient
from tdx_kbs_protocol._errors import (
    AdminTokenError,
    JweError,
    KbsAnswerError,
    KbsClientError,
    KbsProtocolError,
    KbsRefused,
    KbsUnavailable,
    MessageError,
    ResourcePathError,
    UnsupportedKeyError,
)
from tdx_kbs_protocol._identity import IdentityEvidence
from tdx_kbs_protocol._jwe import TeeKeyPair, encrypt_resource
from tdx_kbs_protocol._messages import (
    ERROR_TYPE_BASE,
    PROTOCOL_VERSION,
    TEE_TDX,
    Attestation,
    Challenge,
    Request,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    TeePublicKey,
    error_body,
    runtime_data_binding,
)
from tdx_kbs_protocol._resource import (
    STORE_KEY_REPOSITORY,
    STORE_KEY_TYPE,
    ResourcePath,
    store_key_path,
)

__all__ = [
    "ERROR_TYPE_BASE",
    "PROTOCOL_VERSION",
    "STORE_KEY_REPOSITORY",
    "STORE_KEY_TYPE",
    "TEE_TDX",
    "AdminClaims",
    "AdminTokenError",
    "Attestation",
    "Challenge",
    "EvidenceProvider",
    "IdentityEvidence",
    "JweError",
    "KbsAnswerError",
    "KbsClient",
    "KbsClientError",
    "KbsProtocolError",
    "KbsRefused",
    "KbsUnavailable",
    "MessageError",
    "Request",
    "ResourcePath",
    "ResourcePathError",
    "RuntimeData",
    "TdxEvidence",
    "TeeEvidence",
    "TeeKeyPair",
    "TeePublicKey",
    "UnsupportedKeyError",
    "encrypt_resource",
    "error_body",
    "make_admin_token",
    "runtime_data_binding",
    "store_key_path",
    "verify_admin_token",
]
