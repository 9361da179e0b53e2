"""Attestation tokens: compact EdDSA JWTs the broker signs with a key it holds only in memory.

The key is generated at start and never written anywhere: a restart invalidates every token
(the guest attests again). A token carries the attested claims (the `tdx` and `identity`
parts of the policy input), the TEE public key resources are encrypted to, `iat` and `exp`;
a resource request with a bearer token is evaluated on exactly those claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HEADER: Final = {"alg": "EdDSA", "typ": "JWT"}
MAX_TOKEN_LEN: Final = 64 * 1024


class TokenError(Exception):
    """A bearer attestation token this broker did not issue, or that expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if _B64URL.fullmatch(text) is None:
        raise TokenError("the token is not a compact JWT")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("the token is not a compact JWT") from None


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenIssuer:
    """Signs and verifies this process's attestation tokens."""

    def __init__(self, ttl: int, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key if key is not None else Ed25519PrivateKey.generate()
        self._ttl = ttl

    def __repr__(self) -> str:
        return f"TokenIssuer(ttl={self._ttl}, <in-memory key>)"

    @property
    def ttl(self) -> int:
        return self._ttl

    def issue(self, claims: Mapping[str, Any], *, now: int) -> str:
        """A token over `claims` plus `iat` and `exp` (now + ttl)."""
        body = {**claims, "iat": now, "exp": now + self._ttl}
        signing_input = (
            _b64(json.dumps(HEADER, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"))
        return signing_input + "." + _b64(signature)

    def verify(self, token: str, *, now: int) -> dict[str, Any]:
        """The claims of a token this issuer signed and that has not expired; `TokenError`."""
        if len(token) > MAX_TOKEN_LEN:
            raise TokenError("the token is too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("the token is not a compact JWT")
        header_raw, body_raw, signature = (_unb64(p) for p in parts)
        try:
            self._key.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except InvalidSignature:
            raise TokenError("the token was not issued by this broker") from None
        try:
            header = json.loads(header_raw)
            body = json.loads(body_raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TokenError("the token is not a compact JWT") from None
        if header != HEADER or not isinstance(body, dict):
            raise TokenError("the token is not one of this broker's tokens")
        exp = body.get("exp")
        if type(exp) is not int or exp <= now:
            raise TokenError("the token expired: attest again")
        return body
