"""An in-process fake of the owner's key broker (an `httpx.MockTransport` handler) that checks
what the real broker checks before it releases a resource: protocol version and TEE, the
session cookie and its nonce, the runtime-data binding in the quote's report_data, the instance
key's proof of possession, the RTMR3 event log replayed to the quote's RTMR3 and the owner it
names, and that the resource asked for is this instance's store key. It can be down, refuse,
or hold anything in place of the owner's envelope; it records every release.

`MitmKbs` is a host in the middle answering at the broker URL: it checks nothing and hands the
TD a validly encrypted JWE (to the TD's own ephemeral key) of whatever it chose."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdx_quote
from tdx_kbs_protocol import (
    PROTOCOL_VERSION,
    TEE_TDX,
    Attestation,
    Challenge,
    IdentityEvidence,
    KbsProtocolError,
    Request,
    encrypt_resource,
    error_body,
    runtime_data_binding,
    seal_store_key,
    store_key_path,
)
from tdx_measure import EventLog

COOKIE = "kbs-session-id"


@dataclass
class _Session:
    nonce: str
    attestation: Attestation | None = None
    instance_pubkey: bytes | None = None


@dataclass
class FakeKbs:
    """Holds `resources` (path text -> bytes); `owner` (when set) must be the event log's
    latest owner identity. `down` answers every request with a transport error, `refuse`
    with a 401 PolicyDeny."""

    resources: dict[str, bytes] = field(default_factory=dict)
    owner: bytes | None = None
    down: bool = False
    refuse: bool = False
    released: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    requests: int = 0
    sessions: dict[str, _Session] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def put_store_key(self, instance_pubkey: bytes, key: bytes, owner: Ed25519PrivateKey) -> None:
        """Hold `key` as `tdxctl kbs put-key` uploads it: in `owner`'s envelope for the
        instance."""
        self.put_resource(instance_pubkey, seal_store_key(owner, instance_pubkey, key))

    def put_resource(self, instance_pubkey: bytes, data: bytes) -> None:
        """Hold `data`, as it is, as the instance's store-key resource."""
        self.resources[str(store_key_path(instance_pubkey))] = data

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            raise httpx.ConnectError("fake key broker is down", request=request)
        path = request.url.path
        if request.method == "POST" and path == "/kbs/v0/auth":
            return self._auth(request)
        if request.method == "POST" and path == "/kbs/v0/attest":
            return self._attest(request)
        prefix = "/kbs/v0/resource/"
        if request.method == "GET" and path.startswith(prefix):
            return self._resource(request, path[len(prefix) :])
        return self._error(404, "NotFound", f"no route {request.method} {path}")

    def _error(self, status: int, variant: str, detail: str) -> httpx.Response:
        self.refusals.append(f"{variant}: {detail}")
        return httpx.Response(status, json=error_body(variant, detail))

    def _auth(self, request: httpx.Request) -> httpx.Response:
        try:
            message = Request.from_json(json.loads(request.content))
        except (ValueError, KbsProtocolError) as exc:
            return self._error(400, "InvalidRequest", str(exc))
        if message.version != PROTOCOL_VERSION or message.tee != TEE_TDX:
            return self._error(400, "InvalidRequest", "version or tee")
        challenge = Challenge.fresh()
        session_id = secrets.token_hex(16)
        self.sessions[session_id] = _Session(nonce=challenge.nonce)
        response = httpx.Response(200, json=challenge.to_json())
        response.headers["set-cookie"] = f"{COOKIE}={session_id}; Path=/kbs"
        return response

    def _session(self, request: httpx.Request) -> _Session | None:
        header = request.headers.get("cookie", "")
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return self.sessions.get(value)
        return None

    def _attest(self, request: httpx.Request) -> httpx.Response:
        session = self._session(request)
        if session is None:
            return self._error(401, "InvalidCookie", "no session")
        try:
            attestation = Attestation.from_json(json.loads(request.content))
        except (ValueError, KbsProtocolError) as exc:
            return self._error(400, "InvalidRequest", str(exc))
        runtime = attestation.runtime_data
        if runtime.nonce != session.nonce:
            return self._error(401, "InvalidNonce", "the nonce is not the session's")
        evidence = attestation.tee_evidence
        quote = tdx_quote.parse_quote(evidence.primary_evidence.quote, allow_zero_padding=True).body
        expected = runtime_data_binding(
            runtime.nonce, runtime.tee_pubkey, evidence.additional_evidence
        )
        if quote.report_data != expected:
            return self._error(
                401, "EvidenceMismatch", "report_data does not bind the runtime data"
            )
        try:
            identity = IdentityEvidence.decode(evidence.additional_evidence)
            identity.verify_possession(runtime.nonce, runtime.tee_pubkey)
        except KbsProtocolError as exc:
            return self._error(401, "EvidenceMismatch", f"possession: {exc}")
        log = EventLog.from_json(identity.event_log)
        if log.replay() != quote.rtmr3:
            return self._error(401, "EvidenceMismatch", "the event log does not replay to RTMR3")
        if self.owner is not None and log.identity("owner") != self.owner:
            return self._error(401, "PolicyDeny", "the event log names another owner")
        session.attestation = attestation
        session.instance_pubkey = identity.instance_pubkey
        return httpx.Response(200, json={"token": "fake-token"})

    def _resource(self, request: httpx.Request, path: str) -> httpx.Response:
        session = self._session(request)
        if session is None or session.attestation is None or session.instance_pubkey is None:
            return self._error(401, "TokenNotFound", "not attested")
        if self.refuse:
            return self._error(401, "PolicyDeny", "the policy refuses the release")
        if path != str(store_key_path(session.instance_pubkey)):
            return self._error(401, "PolicyDeny", "not this instance's store key")
        data = self.resources.get(path)
        if data is None:
            return self._error(404, "ResourceNotFound", f"no resource {path}")
        self.released.append(path)
        jwe = encrypt_resource(data, session.attestation.runtime_data.tee_pubkey)
        return httpx.Response(200, json=jwe)


@dataclass
class MitmKbs:
    """A host answering the TD's KBS requests in the broker's place: any attestation passes,
    and every resource is `payload`, encrypted to the TEE key of the session's attestation (a
    JWE the TD decrypts without error)."""

    payload: bytes = b""
    released: int = 0
    attested: dict[str, Attestation] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/kbs/v0/auth":
            session_id = secrets.token_hex(16)
            response = httpx.Response(200, json=Challenge.fresh().to_json())
            response.headers["set-cookie"] = f"{COOKIE}={session_id}; Path=/kbs"
            return response
        session_id = request.headers.get("cookie", "").partition("=")[2]
        if path == "/kbs/v0/attest":
            self.attested[session_id] = Attestation.from_json(json.loads(request.content))
            return httpx.Response(200, json={"token": "mitm-token"})
        attestation = self.attested[session_id]
        self.released += 1
        return httpx.Response(
            200, json=encrypt_resource(self.payload, attestation.runtime_data.tee_pubkey)
        )
