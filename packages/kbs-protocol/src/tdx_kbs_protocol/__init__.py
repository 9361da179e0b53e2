"""Trustee's KBS protocol (RCAR, version 0.4.0) for TDX, as tdx-identity's key broker speaks it.

Messages (`Request`, `Challenge`, `Attestation`...) parse strictly from decoded JSON and raise
`MessageError`; `runtime_data_binding` is the report_data the quote must carry; resources travel
as Trustee's flattened JWE (`encrypt_resource`, `TeeKeyPair.decrypt`); admin calls carry an
EdDSA JWT (`make_admin_token`, `verify_admin_token`); `IdentityEvidence` is tdx-identity's
additional evidence (a tdx-kbs extension); `seal_store_key` / `open_store_key` are the owner's
signed store-key envelope; `KbsClient` is an async httpx client. See README.md.
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
    StoreKeyEnvelopeError,
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
from tdx_kbs_protocol._store_key import (
    STORE_KEY_BYTES,
    STORE_KEY_DOMAIN,
    STORE_KEY_ENVELOPE_BYTES,
    open_store_key,
    seal_store_key,
)

__all__ = [
    "ERROR_TYPE_BASE",
    "PROTOCOL_VERSION",
    "STORE_KEY_BYTES",
    "STORE_KEY_DOMAIN",
    "STORE_KEY_ENVELOPE_BYTES",
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
    "StoreKeyEnvelopeError",
    "TdxEvidence",
    "TeeEvidence",
    "TeeKeyPair",
    "TeePublicKey",
    "UnsupportedKeyError",
    "encrypt_resource",
    "error_body",
    "make_admin_token",
    "open_store_key",
    "runtime_data_binding",
    "seal_store_key",
    "store_key_path",
    "verify_admin_token",
]
