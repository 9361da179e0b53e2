"""A resource as the key broker answers it: Trustee's flattened JWE, decrypted by the guest
(`TeeKeyPair.decrypt`), from the JSON text of the answer.

The TEE key is fixed (`TEE_KEY`) so that the seeds decrypt. Refusing is
`tdx_kbs_protocol.JweError` or `MessageError` (the answer is not a JSON object).
"""

from __future__ import annotations

import functools

from joserfc.jwk import ECKey

from fuzz._harness import Harness
from tdx_kbs_protocol import JweError, MessageError, TeeKeyPair
from tdx_kbs_protocol._codec import loads_object

# A fixed P-256 key (the private scalar d = 1..32 as bytes, valid: below the group order).
TEE_KEY_D = bytes(range(1, 33))
MAX_ANSWER_BYTES = 1024 * 1024


@functools.cache
def tee_key() -> TeeKeyPair:
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.derive_private_key(int.from_bytes(TEE_KEY_D, "big"), ec.SECP256R1())
    return TeeKeyPair.from_private(ECKey.import_key(private))


def target(data: bytes) -> None:
    tee_key().decrypt(loads_object(data, what="resource", max_bytes=MAX_ANSWER_BYTES))


HARNESS = Harness(
    name="kbs_jwe",
    summary="the guest's decryption of a key broker resource (flattened JWE)",
    target=target,
    allowed=(JweError, MessageError),
)
