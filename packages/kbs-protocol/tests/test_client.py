"""KbsClient against an in-process fake key broker on httpx.MockTransport (no sockets)."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_kbs_protocol import (
    ERROR_TYPE_BASE,
    Attestation,
    Challenge,
    IdentityEvidence,
    KbsAnswerError,
    KbsClient,
    KbsRefused,
    KbsUnavailable,
    MessageError,
    Request,
    ResourcePath,
    TdxEvidence,
    TeePublicKey,
    encrypt_resource,
    error_body,
    make_admin_token,
    runtime_data_binding,
    store_key_path,
    verify_admin_token,
)

ADMIN = Ed25519PrivateKey.generate()
INSTANCE = Ed25519PrivateKey.generate()
QUOTE_PREFIX = b"FAKE-QUOTE:"


class Evidence:
    """A fake TD: the 'quote' is a prefix and the report_data, so the server can check it."""

    def __init__(self) -> None:
        self.nonces: list[str] = []

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        self.nonces.append(nonce)
        return IdentityEvidence.create(INSTANCE, nonce, tee_pubkey, "{}").encode()

    async def quote(self, report_data: bytes) -> TdxEvidence:
        return TdxEvidence(quote=QUOTE_PREFIX + report_data, cc_eventlog=None)


@dataclass
class FakeBroker:
    """Just enough of the key broker to exercise the client, checking what the client sends."""

    resources: dict[str, bytes] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    attested: dict[str, TeePublicKey] = field(default_factory=dict)
    policy: str | None = None
    cookies_seen: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        cookie = request.headers.get("cookie")
        path = request.url.path
        self.cookies_seen.append((path, cookie))
        if request.method == "POST" and path == "/kbs/v0/auth":
            req = Request.from_json(json.loads(request.content))
            assert (req.version, req.tee) == ("0.4.0", "tdx")
            new_session = secrets.token_hex(16)
            challenge = Challenge.fresh()
            self.sessions[new_session] = challenge.nonce
            return httpx.Response(
                200,
                json=challenge.to_json(),
                headers={"set-cookie": f"kbs-session-id={new_session}; Path=/kbs"},
            )
        if request.method == "POST" and path == "/kbs/v0/attest":
            session = self._session(cookie)
            if session is None:
                return httpx.Response(401, json=error_body("UnAuthenticatedCookie", "no session"))
            attestation = Attestation.from_json(json.loads(request.content))
            data = attestation.runtime_data
            evidence = attestation.tee_evidence
            assert data.nonce == self.sessions[session]
            identity = IdentityEvidence.decode(evidence.additional_evidence)
            identity.verify_possession(data.nonce, data.tee_pubkey)
            expected = runtime_data_binding(
                data.nonce, data.tee_pubkey, evidence.additional_evidence
            )
            assert evidence.primary_evidence.quote == QUOTE_PREFIX + expected
            self.attested[session] = data.tee_pubkey
            return httpx.Response(200, json={"token": "attestation-token"})
        if path.startswith("/kbs/v0/resource/"):
            name = path.removeprefix("/kbs/v0/resource/")
            if request.method == "POST":
                verify_admin_token(
                    request.headers["authorization"].removeprefix("Bearer "),
                    ADMIN.public_key(),
                    now=_now(),
                )
                self.resources[name] = request.content
                return httpx.Response(200)
            session = self._session(cookie)
            if session is None or session not in self.attested:
                return httpx.Response(401, json=error_body("UnAuthenticatedCookie", "no session"))
            if name not in self.resources:
                return httpx.Response(404, json=error_body("ResourceNotFound", f"{name} unknown"))
            return httpx.Response(
                200, json=encrypt_resource(self.resources[name], self.attested[session])
            )
        if request.method == "POST" and path == "/kbs/v0/resource-policy":
            verify_admin_token(
                request.headers["authorization"].removeprefix("Bearer "),
                ADMIN.public_key(),
                now=_now(),
            )
            body = json.loads(request.content)
            text = body["policy"]
            self.policy = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            return httpx.Response(200)
        return httpx.Response(404, json=error_body("NotFound", "no route"))

    def _session(self, cookie: str | None) -> str | None:
        if cookie is None or not cookie.startswith("kbs-session-id="):
            return None
        session = cookie.removeprefix("kbs-session-id=")
        return session if session in self.sessions else None


def _now() -> int:
    import time

    return int(time.time())


async def test_full_flow_puts_and_gets_a_store_key() -> None:
    broker = FakeBroker()
    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(broker))
    try:
        path = store_key_path(b"\x07" * 32)
        secret = secrets.token_bytes(32)
        await client.put_resource(path, secret, make_admin_token(ADMIN))
        assert broker.resources == {str(path): secret}
        evidence = Evidence()
        assert await client.get_resource(path, evidence) == secret
        assert await client.get_resource(path, evidence) == secret
        assert len(set(evidence.nonces)) == 2  # one fresh session each time
        await client.set_policy("package policy\ndefault allow := false\n", make_admin_token(ADMIN))
        assert broker.policy == "package policy\ndefault allow := false\n"
    finally:
        await client.aclose()


async def test_cookie_is_carried_from_auth_to_attest_to_resource() -> None:
    broker = FakeBroker(resources={"a/b/c": b"x"})
    client = KbsClient("http://kbs.test/", transport=httpx.MockTransport(broker))
    try:
        await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
    finally:
        await client.aclose()
    paths = [p for p, _ in broker.cookies_seen]
    assert paths == ["/kbs/v0/auth", "/kbs/v0/attest", "/kbs/v0/resource/a/b/c"]
    (session,) = broker.sessions
    assert [c for _, c in broker.cookies_seen] == [None] + [f"kbs-session-id={session}"] * 2


async def test_4xx_is_refused_with_status_variant_and_detail() -> None:
    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(FakeBroker()))
    try:
        with pytest.raises(KbsRefused) as info:
            await client.get_resource(ResourcePath.parse("a/b/missing"), Evidence())
    finally:
        await client.aclose()
    assert (info.value.status, info.value.variant) == (404, "ResourceNotFound")
    assert info.value.detail == "a/b/missing unknown"


async def test_4xx_without_a_json_body_still_refuses() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=b"<html>nope</html>")

    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(KbsRefused) as info:
            await client.put_resource(ResourcePath.parse("a/b/c"), b"x", "token")
    finally:
        await client.aclose()
    assert (info.value.status, info.value.variant, info.value.detail) == (
        401,
        "Unknown",
        "HTTP 401",
    )


async def test_error_information_fixture_is_read() -> None:
    from pathlib import Path

    fixture = json.loads(
        (Path(__file__).parent / "vectors/kbs_types_error_information.json").read_text()
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=fixture)

    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(KbsRefused) as info:
            await client.set_policy("x", "token")
    finally:
        await client.aclose()
    assert (info.value.variant, info.value.detail) == ("problemtype", "problemdetail")


async def test_connect_error_and_5xx_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=error_body("Internal", "down"))

    for handler in (refuse, broken):
        client = KbsClient("http://kbs.test", transport=httpx.MockTransport(handler))
        try:
            with pytest.raises(KbsUnavailable):
                await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
        finally:
            await client.aclose()


def answering(
    auth: httpx.Response,
    attest: httpx.Response | None = None,
    resource: httpx.Response | None = None,
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth"):
            return auth
        if request.url.path.endswith("/attest"):
            assert attest is not None
            return attest
        assert resource is not None
        return resource

    return httpx.MockTransport(handler)


COOKIE = {"set-cookie": "kbs-session-id=abc"}
GOOD_AUTH = {"nonce": "bm9uY2U=", "extra-params": ""}


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(
            answering(httpx.Response(200, content=b"not json", headers=COOKIE)), id="auth-not-json"
        ),
        pytest.param(
            answering(httpx.Response(200, json={"nonce": 5}, headers=COOKIE)),
            id="auth-bad-challenge",
        ),
        pytest.param(answering(httpx.Response(200, json=GOOD_AUTH)), id="auth-no-cookie"),
        pytest.param(
            answering(
                httpx.Response(200, json=GOOD_AUTH, headers={"set-cookie": 'kbs-session-id="a b"'})
            ),
            id="auth-bad-cookie",
        ),
        pytest.param(
            answering(
                httpx.Response(200, json=GOOD_AUTH, headers=COOKIE), httpx.Response(200, json={})
            ),
            id="attest-no-token",
        ),
        pytest.param(
            answering(
                httpx.Response(200, json=GOOD_AUTH, headers=COOKIE),
                httpx.Response(200, json={"token": "t"}),
                httpx.Response(200, json={"protected": "x"}),
            ),
            id="resource-not-jwe",
        ),
        pytest.param(
            answering(
                httpx.Response(200, json=GOOD_AUTH, headers=COOKIE),
                httpx.Response(200, json={"token": "t"}),
                httpx.Response(200, content=b"\xff"),
            ),
            id="resource-not-json",
        ),
        pytest.param(
            answering(httpx.Response(302, headers={"location": "http://elsewhere/"})), id="redirect"
        ),
    ],
)
async def test_malformed_2xx_is_an_answer_error(transport: httpx.MockTransport) -> None:
    client = KbsClient("http://kbs.test", transport=transport)
    try:
        with pytest.raises(KbsAnswerError):
            await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
    finally:
        await client.aclose()


async def test_resource_encrypted_to_another_key_is_an_answer_error() -> None:
    from tdx_kbs_protocol import TeeKeyPair

    other = encrypt_resource(b"x", TeeKeyPair.generate().public)
    transport = answering(
        httpx.Response(200, json=GOOD_AUTH, headers=COOKIE),
        httpx.Response(200, json={"token": "t"}),
        httpx.Response(200, json=other),
    )
    client = KbsClient("http://kbs.test", transport=transport)
    try:
        with pytest.raises(KbsAnswerError, match="does not decrypt"):
            await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
    finally:
        await client.aclose()


def test_refused_and_error_type_base() -> None:
    err = KbsRefused(401, "PolicyDeny", "denied")
    assert (err.status, err.variant, err.detail) == (401, "PolicyDeny", "denied")
    assert ERROR_TYPE_BASE.endswith("/errors/")
    assert issubclass(KbsAnswerError, Exception) and not issubclass(KbsAnswerError, MessageError)


async def test_oversized_answer_is_refused_while_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b" " * (32 * 1024 * 1024 + 1), headers=COOKIE)

    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(KbsAnswerError, match="too large"):
            await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
    finally:
        await client.aclose()


async def test_timeout_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = KbsClient("http://kbs.test", timeout=0.1, transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(KbsUnavailable):
            await client.put_resource(ResourcePath.parse("a/b/c"), b"x", "token")
    finally:
        await client.aclose()


async def test_admin_calls_carry_no_session_cookie() -> None:
    broker = FakeBroker(resources={"a/b/c": b"x"})
    client = KbsClient("http://kbs.test", transport=httpx.MockTransport(broker))
    try:
        await client.get_resource(ResourcePath.parse("a/b/c"), Evidence())
        await client.put_resource(ResourcePath.parse("a/b/d"), b"y", make_admin_token(ADMIN))
    finally:
        await client.aclose()
    assert broker.cookies_seen[-1] == ("/kbs/v0/resource/a/b/d", None)
