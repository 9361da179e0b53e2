"""Builders for registration requests carrying real (unsigned) TDX quotes and RTMR3 event logs,
and fake verifiers. Bodies are v2 (over a registry challenge, `Instance.fresh` fetches one);
`Instance.v1_body` builds the v1 bodies of the compatibility tests."""

from __future__ import annotations

import base64
import enum
import hashlib
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_measure import BootEvent, Event, EventLog, ExecutableEvent, Transition, WorkloadEvent
from tdx_ppid import Ppid, quote_ppid
from tdx_quote import (
    BodyType,
    CertificationData,
    Header,
    PpidCertData,
    Quote,
    QuoteSignatureData,
    TdReport10,
    TeeType,
    build_quote,
    parse_quote,
)
from tdx_registry.ops import registry_openapi
from tdx_report_data import (
    IdentityInfo,
    Role,
    prove_possession,
    report_data_for,
    report_data_for_v2,
    sign_identity,
    sign_identity_v2,
    sign_instance_v2,
)
from tdx_service_kit.openapi_testing import validate_exchange

MR_TD = bytes(range(48))
UNISSUED = bytes(32)
"""A well-formed challenge the registry never issued (for bodies refused before it counts)."""

Running = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
"""The `running` fixture: `async with running(**settings_overrides) as client`."""

REGISTRY_OPENAPI = registry_openapi()


async def check_against_openapi(response: httpx.Response) -> None:
    """httpx response hook: every answer must be one the registry's OpenAPI document lists, its
    body valid against the schema, and every accepted request body valid against the request's
    (`ResponseMismatch` or `RequestMismatch` in the test otherwise)."""
    await response.aread()
    validate_exchange(
        REGISTRY_OPENAPI,
        response.request.method,
        response.request.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        request_body=response.request.content,
    )


def openapi_client(url: str, **options: Any) -> httpx.AsyncClient:
    """A client of the registry at `url` that checks each answer against the document."""
    return httpx.AsyncClient(
        base_url=url, event_hooks={"response": [check_against_openapi]}, **options
    )


def error_of(response: httpx.Response) -> str:
    """The reason of an API.md error body (asserting it is exactly `{"error": ...}`)."""
    body = response.json()
    assert set(body) == {"error"}, body
    reason: str = body["error"]
    return reason


def helper(
    role: str, build_id: bytes | None = None, *, content: bytes | None = None
) -> ExecutableEvent:
    """An executable event for `role`; the file hash is derived from `content` (default: role)."""
    data = role.encode() if content is None else content
    return ExecutableEvent(
        role=role,
        path=f"/usr/bin/{role}",
        sha384=hashlib.sha384(data).digest(),
        build_id=build_id,
        machine="EM_X86_64",
    )


def workload(
    transition: Transition, image: str = "registry.example/app:1", *, port: int = 8080
) -> WorkloadEvent:
    return WorkloadEvent(
        transition=transition,
        image=image,
        image_id="sha256:" + hashlib.sha256(image.encode()).hexdigest(),
        persist_dirs=("/data", "/srv/state"),
        port=port,
    )


def make_log(*events: Event, boot_nonce: bytes | None = None) -> EventLog:
    """A log of a fresh boot followed by `events`."""
    nonce = os.urandom(32) if boot_nonce is None else boot_nonce
    log = EventLog(BootEvent(boot_nonce=nonce, timestamp=1_800_000_000))
    for event in events:
        log.append(event)
    return log


def raw_pubkey(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def build_test_quote(
    report_data: bytes, ppid: bytes, *, mr_td: bytes = MR_TD, rtmr3: bytes = bytes(48)
) -> bytes:
    """A well-formed v4 TDX quote (cleartext PPID cert data, zero signature)."""
    body = TdReport10(
        tee_tcb_svn=bytes(16), mr_seam=bytes(48), mr_signer_seam=bytes(48),
        seam_attributes=bytes(8), td_attributes=bytes(8), xfam=bytes(8), mr_td=mr_td,
        mr_config_id=bytes(48), mr_owner=bytes(48), mr_owner_config=bytes(48),
        rtmr0=bytes(48), rtmr1=bytes(48), rtmr2=bytes(48), rtmr3=rtmr3,
        report_data=report_data,
    )  # fmt: skip
    header = Header(
        version=4, attestation_key_type=2, tee_type=TeeType.TDX, qe_svn=0, pce_svn=0,
        qe_vendor_id=bytes(16), user_data=bytes(20),
    )  # fmt: skip
    cert = CertificationData(
        cert_type=1, body=PpidCertData(ppid=ppid, cpu_svn=bytes(16), pce_svn=0, pce_id=0)
    )
    quote = Quote(
        header=header,
        body_type=BodyType.TD_REPORT_10,
        body=body,
        signature_data=QuoteSignatureData(
            signature=bytes(64), attestation_key=bytes(64), certification_data=cert
        ),
    )
    return build_quote(quote)


def identity_for(instance: Ed25519PrivateKey, identity_key: Ed25519PrivateKey) -> IdentityInfo:
    """A v1 identity (raw signatures over the other key)."""
    return sign_identity(
        instance, raw_pubkey(identity_key), identity_key.sign(raw_pubkey(instance))
    )


def identity_v2_for(
    instance: Ed25519PrivateKey, role: Role, identity_key: Ed25519PrivateKey
) -> IdentityInfo:
    """A v2 identity in `role`: the identity key's and the instance key's v2 signatures."""
    return sign_identity_v2(
        instance,
        role,
        raw_pubkey(identity_key),
        sign_instance_v2(identity_key, role, raw_pubkey(instance)),
    )


async def fetch_challenge(client: httpx.AsyncClient) -> bytes:
    """A fresh nonce from the registry's GET /challenge."""
    response = await client.get("/challenge")
    assert response.status_code == 200, response.text
    return bytes.fromhex(response.json()["nonce"])


def identity_json(identity: IdentityInfo | None) -> dict[str, str] | None:
    return None if identity is None else identity.to_object()


class _Default(enum.Enum):
    LOG = "the instance's own log"


INSTANCE_LOG = _Default.LOG
"""`Instance.body(event_log=INSTANCE_LOG)` (the default): the instance's one boot log."""


@dataclass
class Instance:
    """A TD instance: its key, 16-byte PPID and the event log of its current boot (helpers
    only), able to build registration bodies."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    ppid: bytes = b"\x5a" * 16
    log: EventLog = field(default_factory=lambda: make_log(helper("podman")))

    @property
    def pubkey(self) -> bytes:
        return raw_pubkey(self.key)

    def body(
        self,
        operator: Ed25519PrivateKey | IdentityInfo | None = None,
        owner: Ed25519PrivateKey | IdentityInfo | None = None,
        *,
        challenge: bytes,
        quote_ppid: bytes | None = None,
        report_data: bytes | None = None,
        ppid: bytes | None = None,
        event_log: EventLog | _Default | None = INSTANCE_LOG,
        rtmr3: bytes | None = None,
        proof_key: Ed25519PrivateKey | None = None,
    ) -> dict[str, Any]:
        """A v2 POST /register body over `challenge` whose quote commits to it (unless
        `report_data` overrides the quote's) and whose proof of possession over its binding is
        signed by `proof_key` (default: the instance key). An identity given as a key is signed
        v2 in its role; an `IdentityInfo` is sent as it is. It carries `event_log` (by default
        the instance's own log; None: no log) and the quote's RTMR3 is its replay (or
        `rtmr3`)."""
        ppid = self.ppid if ppid is None else ppid
        op = self._identity("operator", operator)
        ow = self._identity("owner", owner)
        binding = report_data_for_v2(self.pubkey, ppid, challenge, op, ow)
        data = binding if report_data is None else report_data
        body = self._body(op, ow, data, quote_ppid, ppid, event_log, rtmr3)
        signer = self.key if proof_key is None else proof_key
        body["challenge"] = challenge.hex()
        body["instance_signature"] = prove_possession(signer, challenge, binding).hex()
        return body

    async def fresh(
        self,
        client: httpx.AsyncClient,
        operator: Ed25519PrivateKey | IdentityInfo | None = None,
        owner: Ed25519PrivateKey | IdentityInfo | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """`body` over a challenge fetched from the registry behind `client` just now."""
        return self.body(operator, owner, challenge=await fetch_challenge(client), **overrides)

    def v1_body(
        self,
        operator: Ed25519PrivateKey | None = None,
        owner: Ed25519PrivateKey | None = None,
        *,
        event_log: EventLog | _Default | None = INSTANCE_LOG,
    ) -> dict[str, Any]:
        """A v1 body (no challenge, v1 binding, v1 identity signatures)."""
        op = identity_for(self.key, operator) if operator else None
        ow = identity_for(self.key, owner) if owner else None
        data = report_data_for(self.pubkey, self.ppid, op, ow)
        return self._body(op, ow, data, None, self.ppid, event_log, None)

    def _identity(
        self, role: Role, identity: Ed25519PrivateKey | IdentityInfo | None
    ) -> IdentityInfo | None:
        if identity is None or isinstance(identity, IdentityInfo):
            return identity
        return identity_v2_for(self.key, role, identity)

    def _body(
        self,
        op: IdentityInfo | None,
        ow: IdentityInfo | None,
        report_data: bytes,
        quote_ppid: bytes | None,
        ppid: bytes,
        event_log: EventLog | _Default | None,
        rtmr3: bytes | None,
    ) -> dict[str, Any]:
        if event_log is INSTANCE_LOG:
            event_log = self.log
        if rtmr3 is None:
            rtmr3 = bytes(48) if event_log is None else event_log.replay()
        quote = build_test_quote(
            report_data, self.ppid if quote_ppid is None else quote_ppid, rtmr3=rtmr3
        )
        body: dict[str, Any] = {
            "instance_pubkey": self.pubkey.hex(),
            "ppid": ppid.hex(),
            "attestation_quote": base64.b64encode(quote).decode(),
            "operator": identity_json(op),
            "owner": identity_json(ow),
        }
        if event_log is not None:
            body["event_log"] = event_log.to_json()
        return body


@dataclass(frozen=True)
class ClaimedFacts:
    """What `FakeCache` claims a DCAP verification established, read from the parsed quote and
    signed by nobody: the registry's `DcapFacts`, not a `tdx_verify.VerifiedQuote` (which only
    tdx-verify's `Verifier` can make)."""

    quote: Quote
    tcb_status: str
    advisory_ids: tuple[str, ...]
    ppid: Ppid
    mr_td: bytes
    report_data: bytes
    verified_at: datetime
    tcb_grace_until: datetime | None = None


class FakeCache:
    """Stands in for `tdx_verify.CollateralCache`: claims any parsable quote verified with
    `tcb_status` and `advisory_ids`, or raises `error`."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0
        self.tcb_status = "UpToDate"
        self.advisory_ids: tuple[str, ...] = ("INTEL-SA-00837",)

    async def verify_quote(self, quote: bytes, *, now: datetime) -> ClaimedFacts:
        self.calls += 1
        if self.error is not None:
            raise self.error
        parsed = parse_quote(quote)
        return ClaimedFacts(
            quote=parsed,
            tcb_status=self.tcb_status,
            advisory_ids=self.advisory_ids,
            ppid=quote_ppid(parsed),
            mr_td=parsed.body.mr_td,
            report_data=parsed.body.report_data,
            verified_at=now,
        )
