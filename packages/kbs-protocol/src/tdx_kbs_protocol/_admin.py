"""Admin bearer tokens: EdDSA (Ed25519) JWTs with strict checks on top of joserfc."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from tdx_kbs_protocol._codec import b64url_decode, loads_object
from tdx_kbs_protocol._errors import AdminTokenError, MessageError

ADMIN_ROLE: Final = "admin"
ADMIN_ALG: Final = "EdDSA"
MAX_TOKEN_CHARS: Final = 8192
_HEADER_MEMBERS: Final = frozenset({"alg", "typ"})


@dataclass(frozen=True)
class AdminClaims:
    iat: int
    exp: int
    role: str


def make_admin_token(
    private_key: Ed25519PrivateKey, *, lifetime: int = 60, now: int | None = None
) -> str:
    """An admin JWT: header {"alg":"EdDSA","typ":"JWT"}, claims {"role","iat","exp"}."""
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        raise AdminTokenError("lifetime must be a positive integer")
    issued = int(time.time()) if now is None else now
    claims = {"role": ADMIN_ROLE, "iat": issued, "exp": issued + lifetime}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*EdDSA.*")
        return jwt.encode(
            {"alg": ADMIN_ALG, "typ": "JWT"},
            claims,
            OKPKey.import_key(private_key),
            algorithms=[ADMIN_ALG],
        )


def _int_claim(claims: dict[str, object], name: str) -> int:
    value = claims.get(name)
    if value is None:
        raise AdminTokenError(f"admin token has no {name}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminTokenError(f"admin token {name} is not an integer")
    return value


def verify_admin_token(
    token: str,
    public_key: Ed25519PublicKey,
    *,
    now: int,
    max_lifetime: int = 300,
    leeway: int = 5,
) -> AdminClaims:
    """Verify an admin JWT; AdminTokenError on any defect.

    alg must be exactly EdDSA (checked before any signature work), the signature must verify with
    public_key, iat and exp must be integers with 0 < exp - iat <= max_lifetime, the token must not
    be expired (now < exp + leeway) nor issued in the future (iat <= now + leeway), nbf (if
    present) must have passed, and role must be "admin".
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise AdminTokenError("admin token is not a string of at most 8192 characters")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise AdminTokenError("admin token is not a signed compact JWT")
    try:
        header = loads_object(
            b64url_decode(parts[0], what="JWT header", max_bytes=MAX_TOKEN_CHARS),
            what="JWT header",
            max_bytes=MAX_TOKEN_CHARS,
        )
        claims = loads_object(
            b64url_decode(parts[1], what="JWT claims", max_bytes=MAX_TOKEN_CHARS),
            what="JWT claims",
            max_bytes=MAX_TOKEN_CHARS,
        )
    except MessageError as exc:
        raise AdminTokenError(f"admin token is malformed: {exc}") from exc
    if header.get("alg") != ADMIN_ALG:
        raise AdminTokenError("admin token alg is not EdDSA")
    if not set(header) <= _HEADER_MEMBERS or header.get("typ", "JWT") != "JWT":
        raise AdminTokenError("admin token header has members other than alg and typ=JWT")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*EdDSA.*")
            jwt.decode(token, OKPKey.import_key(public_key), algorithms=[ADMIN_ALG])
    except (JoseError, ValueError, TypeError) as exc:
        raise AdminTokenError("admin token signature does not verify") from exc
    iat = _int_claim(claims, "iat")
    exp = _int_claim(claims, "exp")
    if exp <= iat:
        raise AdminTokenError("admin token exp is not after iat")
    if exp - iat > max_lifetime:
        raise AdminTokenError(f"admin token lifetime is over {max_lifetime} seconds")
    if now >= exp + leeway:
        raise AdminTokenError("admin token has expired")
    if iat > now + leeway:
        raise AdminTokenError("admin token is issued in the future")
    if "nbf" in claims and _int_claim(claims, "nbf") > now + leeway:
        raise AdminTokenError("admin token is not yet valid")
    role = claims.get("role")
    if role != ADMIN_ROLE:
        raise AdminTokenError("admin token role is not admin")
    return AdminClaims(iat=iat, exp=exp, role=ADMIN_ROLE)
