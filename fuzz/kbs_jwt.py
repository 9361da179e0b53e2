"""The key broker's two bearer tokens: the admin JWT (`verify_admin_token`, EdDSA) and the
attestation token it issues (`TokenIssuer.verify`).

The first byte picks which (even: admin, odd: attestation token); the rest is the token, read
as the HTTP layer hands a header value over (Latin-1). Both keys are fixed (`KEY_SEED`) so that
the seeds carry valid signatures. Refusing is `AdminTokenError` or `TokenError`.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fuzz._harness import Harness
from tdx_kbs.tokens import TokenError, TokenIssuer
from tdx_kbs_protocol import AdminTokenError, verify_admin_token

KEY_SEED = bytes(range(32))
NOW = 1_800_000_000
TOKEN_TTL = 300


@functools.cache
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(KEY_SEED)


@functools.cache
def issuer() -> TokenIssuer:
    return TokenIssuer(TOKEN_TTL, key())


def target(data: bytes) -> None:
    if not data:
        return
    token = data[1:].decode("latin-1")
    if data[0] % 2 == 0:
        verify_admin_token(token, key().public_key(), now=NOW)
    else:
        issuer().verify(token, now=NOW)


HARNESS = Harness(
    name="kbs_jwt",
    summary="the key broker's admin JWT and attestation token verification",
    target=target,
    allowed=(AdminTokenError, TokenError),
)
