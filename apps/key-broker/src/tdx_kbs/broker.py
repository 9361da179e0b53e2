"""The broker's operations, one per route, with no HTTP in them: the RCAR handshake (auth,
attest), resource release under the policy, and the two admin writes. Every refusal is a named
exception (`errors.py` maps each to its answer); nothing is released or stored on a refusal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tdx_kbs_protocol import (
    PROTOCOL_VERSION,
    TEE_TDX,
    AdminTokenError,
    Attestation,
    Challenge,
    Request,
    ResourcePath,
    TeePublicKey,
    encrypt_resource,
    verify_admin_token,
)
from tdx_service_kit import BadRequest, parse_json_object

from .errors import (
    AdminRefused,
    BadUpload,
    KbsMessageError,
    PolicyDenied,
    PolicyUploadError,
    ResourceNotFound,
    TokenMissing,
)
from .policy import PolicyCompileError, ResourcePolicy
from .reference import TdImageReference
from .sealing import ResourceSealer
from .sessions import Session, SessionError, SessionTable
from .store import KbsStore, PolicyHead, StoredPolicy
from .tokens import TokenIssuer
from .verification import EvidenceVerifier

log = logging.getLogger("tdx_kbs.broker")

ADMIN_MAX_LIFETIME = 300
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class AuthRefused(SessionError):
    """An auth request for another protocol version or TEE (Trustee: RcarAuthFailed)."""


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(body)
    except BadRequest as exc:
        raise KbsMessageError(f"the {what} body: {exc.message}") from None


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def policy_input(
    path: ResourcePath,
    uploader: str | None,
    claims: Mapping[str, Any],
    *,
    reference: Mapping[str, Any] | None,
    admin_hex: str,
) -> dict[str, Any]:
    """The policy's input document (apps/key-broker/README.md, "Policy input"): the requested
    resource and its uploader, the attested `tdx` and `identity` claims, the accepted TD image
    (`reference`, the broker's allow-lists) and the admin key (hex)."""
    return {
        "resource": {
            "path": str(path),
            "repository": path.repository,
            "type": path.type,
            "tag": path.tag,
            "uploader": uploader,
        },
        "tdx": claims.get("tdx"),
        "identity": claims.get("identity"),
        "reference": None if reference is None else dict(reference),
        "admin_pubkey": admin_hex,
    }


@dataclass(frozen=True)
class Answer:
    """A route's JSON answer and the session whose cookie goes with it (if any)."""

    body: dict[str, Any]
    session: Session | None = None


class PolicySource:
    """The current resource policy: the latest stored one, else the start-up one (--policy or
    the shipped default). Each release reads the current version's head (version, SHA-256)
    from the store, so an upload through another replica counts at once; the text is read
    and compiled only when the head changes, and each distinct text is compiled once."""

    def __init__(self, store: KbsStore, fallback: ResourcePolicy) -> None:
        self._store = store
        self._fallback = fallback
        self._compiled: dict[str, ResourcePolicy] = {fallback.sha256: fallback}
        self._latest: tuple[PolicyHead, ResourcePolicy] | None = None
        self._evaluating = asyncio.Lock()

    async def allows(self, policy: ResourcePolicy, input_doc: Mapping[str, Any]) -> bool:
        """Evaluate off the event loop, one evaluation at a time (regopy's thread safety is
        not documented, so it never runs twice at once)."""
        async with self._evaluating:
            return await asyncio.to_thread(policy.allows, input_doc)

    async def current(self) -> ResourcePolicy | None:
        """The policy to apply; None when the stored one no longer compiles (then deny)."""
        return self._policy_of(await self._store.current_policy())

    async def for_head(self, head: PolicyHead | None) -> ResourcePolicy | None:
        """The policy to apply when the store's current head is `head` (None: no stored
        policy); None when the stored one does not compile (then deny)."""
        if head is None:
            return self._fallback
        latest = self._latest
        if latest is not None and latest[0] == head:
            return latest[1]
        return await self.current()

    def _policy_of(self, stored: StoredPolicy | None) -> ResourcePolicy | None:
        if stored is None:
            return self._fallback
        cached = self._compiled.get(stored.sha256)
        if cached is not None and cached.text == stored.text:
            policy = cached
        else:
            try:
                policy = ResourcePolicy.compile(stored.text)
            except PolicyCompileError as exc:
                log.error(
                    "the stored resource policy does not compile: every release is denied",
                    extra={"policy_sha256": stored.sha256, "reason": exc.reason[:500]},
                )
                return None
            if len(self._compiled) > 64:
                self._compiled = {self._fallback.sha256: self._fallback}
            self._compiled[policy.sha256] = policy
        self._latest = (PolicyHead(stored.version, stored.sha256), policy)
        return policy


class KeyBroker:
    """The RCAR handshake, resource release and admin writes over one store and one process's
    sessions and token key."""

    def __init__(
        self,
        *,
        store: KbsStore,
        sealer: ResourceSealer,
        sessions: SessionTable,
        tokens: TokenIssuer,
        evidence: EvidenceVerifier,
        policies: PolicySource,
        admin_pubkey: Ed25519PublicKey,
        reference: TdImageReference | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._sessions = sessions
        self._tokens = tokens
        self._evidence = evidence
        self._policies = policies
        self._admin_pubkey = admin_pubkey
        self._admin_hex = admin_pubkey.public_bytes_raw().hex()
        self._reference = None if reference is None else reference.to_json()
        self._clock = clock

    def cookie_max_age(self, session: Session) -> int:
        """Seconds the session has left (its cookie's Max-Age), at least 1."""
        return max(1, int(session.expires_at - self._clock()))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- RCAR handshake -------------------------------------------------------------------

    def auth(self, body: bytes) -> Answer:
        """`POST /kbs/v0/auth`: a fresh session and its nonce for protocol 0.4.0 on TDX."""
        request = Request.from_json(_json(body, "auth"))
        if request.version != PROTOCOL_VERSION:
            raise AuthRefused(
                f"protocol version {request.version[:40]!r} is not supported: "
                f"this broker speaks {PROTOCOL_VERSION}"
            )
        if request.tee != TEE_TDX:
            raise AuthRefused(f"TEE {request.tee[:40]!r} is not supported: only {TEE_TDX!r}")
        challenge = Challenge.fresh()
        session = self._sessions.open(challenge.nonce)
        log.info("session opened", extra={"sessions": len(self._sessions)})
        return Answer(challenge.to_json(), session)

    async def attest(self, session_id: str | None, body: bytes) -> Answer:
        """`POST /kbs/v0/attest`: the session's one attempt; a token on verified evidence."""
        session = self._sessions.begin_attest(session_id)
        attestation = Attestation.from_json(_json(body, "attest"))
        claims = await self._evidence.verify(attestation, session.nonce, now=self._now())
        token = self._tokens.issue(claims.to_json(), now=int(self._clock()))
        session.token = token
        session.attested = True
        log.info(
            "attested",
            extra={
                "instance_pubkey": claims.identity["instance_pubkey"],
                "owner": claims.identity["owner"],
                "tcb_status": claims.tdx["tcb_status"],
                "debug": claims.tdx["debug"],
                "mr_td": claims.tdx["mr_td"],
            },
        )
        return Answer({"token": token}, session)

    def _claims(self, session_id: str | None, authorization: str | None) -> dict[str, Any]:
        """The claims of the cookie's attested session's token, else of the bearer token; the
        token's own expiry applies either way (a session outliving its token releases nothing)."""
        token: str | None = None
        if session_id:
            try:
                session = self._sessions.get(session_id)
                if session.attested:
                    token = session.token
            except SessionError:
                pass
        if token is None:
            token = _bearer(authorization)
        if token is None:
            raise TokenMissing("no attested kbs-session-id session and no bearer attestation token")
        return self._tokens.verify(token, now=int(self._clock()))

    # --- resources ------------------------------------------------------------------------

    def policy_input(
        self, path: ResourcePath, uploader: str | None, claims: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The policy's input document for a release of `path` under this broker's reference
        and admin key."""
        return policy_input(
            path, uploader, claims, reference=self._reference, admin_hex=self._admin_hex
        )

    async def get_resource(
        self, path_text: str, session_id: str | None, authorization: str | None
    ) -> dict[str, str]:
        """`GET /kbs/v0/resource/...`: the resource as a JWE to the attested TEE key, if the
        policy allows it. An unknown path is evaluated with `uploader: null` first, so only a
        caller the policy would serve learns that nothing is stored there."""
        path = ResourcePath.parse(path_text)
        claims = self._claims(session_id, authorization)
        stored, head = await self._store.release_state(str(path))
        input_doc = self.policy_input(path, None if stored is None else stored.uploader, claims)
        policy = await self._policies.for_head(head)
        allowed = policy is not None and await self._policies.allows(policy, input_doc)
        policy_sha256 = None if policy is None else policy.sha256
        identity = claims.get("identity") or {}
        instance = identity.get("instance_pubkey") if isinstance(identity, dict) else None
        if not allowed:
            log.warning(
                "release denied by policy",
                extra={
                    "path": str(path),
                    "instance_pubkey": instance,
                    "policy_sha256": policy_sha256,
                },
            )
            raise PolicyDenied("denied")
        if stored is None:
            raise ResourceNotFound(f"no resource is stored at {path}")
        plaintext = self._sealer.open(str(path), stored.sealed)
        jwe = encrypt_resource(plaintext, TeePublicKey.from_jwk(claims.get("tee-pubkey")))
        log.info(
            "resource released",
            extra={"path": str(path), "instance_pubkey": instance, "policy_sha256": policy_sha256},
        )
        return jwe

    # --- admin ----------------------------------------------------------------------------

    def _admin(self, authorization: str | None) -> str:
        token = _bearer(authorization)
        if token is None:
            raise AdminRefused("an admin request needs Authorization: Bearer <admin JWT>")
        claims = verify_admin_token(
            token, self._admin_pubkey, now=int(self._clock()), max_lifetime=ADMIN_MAX_LIFETIME
        )
        if claims.role != "admin":
            raise AdminTokenError("the token's role is not admin")
        return self._admin_hex

    async def put_resource(self, path_text: str, data: bytes, authorization: str | None) -> None:
        """Admin `POST /kbs/v0/resource/...`: store `data` sealed, audited."""
        admin = self._admin(authorization)
        path = ResourcePath.parse(path_text)
        if not data:
            raise BadUpload("the resource body is empty")
        sealed = self._sealer.seal(str(path), data)
        await self._store.put_resource(str(path), sealed, admin, self._now())
        log.info("resource stored", extra={"path": str(path), "admin": admin})

    async def set_policy(self, body: bytes, authorization: str | None) -> str:
        """Admin `POST /kbs/v0/resource-policy`: a new current policy if it compiles; its
        SHA-256."""
        admin = self._admin(authorization)
        obj = _json(body, "resource-policy")
        encoded = obj.get("policy")
        if not isinstance(encoded, str) or _B64URL.fullmatch(encoded) is None:
            raise PolicyUploadError('the body must be {"policy": <base64url of the Rego text>}')
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise PolicyUploadError("`policy` is not base64url of UTF-8 text") from None
        policy = ResourcePolicy.compile(text)
        stored = await self._store.set_policy(text, policy.sha256, admin, self._now())
        log.info(
            "resource policy set",
            extra={"policy_sha256": policy.sha256, "version": stored.version, "admin": admin},
        )
        return policy.sha256
