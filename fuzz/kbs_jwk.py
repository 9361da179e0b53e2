"""The key broker's tee-pubkey JWK (`TeePublicKey.from_jwk`), as read from runtime-data.

Refusing is `tdx_kbs_protocol.MessageError` (`UnsupportedKeyError`). A key that is accepted
must be usable: the broker encrypts a resource to it (`encrypt_resource`) and binds it into the
report data (`runtime_data_binding`) without any other error.
"""

from __future__ import annotations

from fuzz._harness import Harness
from tdx_kbs_protocol import MessageError, TeePublicKey, encrypt_resource, runtime_data_binding
from tdx_kbs_protocol._codec import loads_object

MAX_JWK_BYTES = 64 * 1024


def target(data: bytes) -> None:
    key = TeePublicKey.from_jwk(loads_object(data, what="tee-pubkey", max_bytes=MAX_JWK_BYTES))
    encrypt_resource(b"resource", key)
    runtime_data_binding("A" * 44, key, "")


HARNESS = Harness(
    name="kbs_jwk",
    summary="the key broker's tee-pubkey JWK: TeePublicKey.from_jwk + encrypt_resource",
    target=target,
    allowed=(MessageError,),
)
