"""Every bad input of the issue: its status, Trustee's error body, and that nothing was
released (the session holds no attestation) or stored."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_helpers import (
    AUTH_BODY,
    KBS,
    Broker,
    Clock,
    Guest,
    SimRunner,
    error_variant,
    start_broker,
)

from tdx_kbs_protocol import TeeKeyPair, TeePublicKey, make_admin_token
from tdx_measure import EventLog, IdentityEvent

Start = Callable[..., AbstractAsyncContextManager[Broker]]

MR_CONFIG_ID_OFFSET = 48 + 16 + 48 + 48 + 8 + 8 + 8 + 48
"""Where MRCONFIGID starts in a v4 quote (header, then the TD report's fields before it)."""


async def assert_not_released(broker: Broker, client: httpx.AsyncClient, guest: Guest) -> None:
    """The session `client` holds is not attested: a resource request finds no token."""
    got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401, got.text
    assert error_variant(got) == "TokenNotFound"


async def refused_attest(
    broker: Broker, guest: Guest, status: int, variant: str, **knobs: Any
) -> str:
    await broker.put(guest.store_key_path, os.urandom(32))
    async with broker.guest_client() as client:
        response = await guest.attest(client, **knobs)
        assert response.status_code == status, response.text
        assert error_variant(response) == variant
        await assert_not_released(broker, client, guest)
        detail: str = response.json()["detail"]
        return detail


async def test_nonce_not_matching_the_session(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        await guest.auth(client)
        other_nonce = await guest.auth(httpx.AsyncClient(base_url=broker.url))
        response = await client.post(
            f"{KBS}/attest", json=guest.attest_body(other_nonce, TeeKeyPair.generate())
        )
        assert response.status_code == 401
        assert error_variant(response) == "AttestationError"
        assert "nonce" in response.json()["detail"]
        await assert_not_released(broker, client, guest)


async def test_quote_binding_another_nonce(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", quote_nonce="b3RoZXIgbm9uY2U="
    )
    assert "report_data" in detail


async def test_unknown_session(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        client.cookies.clear()
        client.cookies.set("kbs-session-id", "not-a-session", path="/kbs/v0")
        response = await client.post(
            f"{KBS}/attest", json=guest.attest_body(nonce, TeeKeyPair.generate())
        )
    assert response.status_code == 401
    assert error_variant(response) == "AttestationError"


async def test_no_session_cookie(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        client.cookies.clear()
        response = await client.post(
            f"{KBS}/attest", json=guest.attest_body(nonce, TeeKeyPair.generate())
        )
    assert response.status_code == 401
    assert error_variant(response) == "AttestationError"


async def test_expired_session(start: Start) -> None:
    clock = Clock()
    async with start(clock=clock) as broker:
        guest = Guest(broker.sim, owner=broker.admin)
        async with broker.guest_client() as client:
            nonce = await guest.auth(client)
            clock.now += broker.settings.sessions.ttl + 1
            response = await client.post(
                f"{KBS}/attest", json=guest.attest_body(nonce, TeeKeyPair.generate())
            )
            assert response.status_code == 401
            assert error_variant(response) == "AttestationError"
            assert "expired" in response.json()["detail"]


async def test_expired_attested_session_and_token(start: Start) -> None:
    clock = Clock()
    async with start(clock=clock) as broker:
        guest = Guest(broker.sim, owner=broker.admin)
        await broker.put(guest.store_key_path, os.urandom(32))
        async with broker.guest_client() as client:
            token = (await guest.attest(client)).json()["token"]
            clock.now += max(broker.settings.sessions.ttl, broker.settings.token_ttl) + 1
            got = await client.get(
                f"{KBS}/resource/{guest.store_key_path}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert got.status_code == 401
            assert error_variant(got) == "TokenVerifierError"


async def test_second_attest_on_one_session(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        body = guest.attest_body(nonce, TeeKeyPair.generate())
        first = await client.post(f"{KBS}/attest", json=body)
        assert first.status_code == 200, first.text
        second = await client.post(f"{KBS}/attest", json=body)
        assert second.status_code == 401
        assert error_variant(second) == "AttestationError"
        assert "already used" in second.json()["detail"]


async def test_failed_attest_spends_the_nonce(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        bad = guest.attest_body(nonce, TeeKeyPair.generate(), report_data=os.urandom(64))
        assert (await client.post(f"{KBS}/attest", json=bad)).status_code == 401
        good = guest.attest_body(nonce, TeeKeyPair.generate())
        again = await client.post(f"{KBS}/attest", json=good)
        assert again.status_code == 401
        assert "already used" in again.json()["detail"]


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def transform(quote: bytes) -> bytes:
        raw = bytearray(quote)
        raw[offset] ^= 0x01
        return bytes(raw)

    return transform


async def test_tampered_quote(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", quote_transform=_flip(MR_CONFIG_ID_OFFSET)
    )
    assert "does not verify" in detail


async def test_quote_from_an_untrusted_root(start: Start) -> None:
    async with start(trusted_root_ca_pem=None) as broker:
        guest = Guest(broker.sim, owner=broker.admin)
        detail = await refused_attest(broker, guest, 401, "AttestationError")
        assert "does not verify" in detail


async def test_garbage_quote(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", quote_transform=lambda q: q[:100]
    )
    assert "does not parse" in detail


async def test_report_data_not_binding_the_runtime_data(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", report_data=os.urandom(64)
    )
    assert "report_data" in detail


async def test_report_data_bound_to_another_tee_key(broker: Broker) -> None:
    """The quote binds one TEE key, the runtime data names another: the broker would encrypt
    to a key the TD never committed to."""
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        body = guest.attest_body(nonce, TeeKeyPair.generate())
        body["runtime-data"]["tee-pubkey"] = dict(TeeKeyPair.generate().public.jwk)
        response = await client.post(f"{KBS}/attest", json=body)
        assert response.status_code == 401
        assert error_variant(response) == "AttestationError"
        await assert_not_released(broker, client, guest)


async def test_possession_by_another_key(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", possession_key=Ed25519PrivateKey.generate()
    )
    assert "possession" in detail


async def test_event_log_that_does_not_replay(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    forged = EventLog.from_json(guest.log.to_json())
    forged.append(IdentityEvent(role="owner", pubkey=os.urandom(32)))
    detail = await refused_attest(
        broker, guest, 401, "AttestationError", event_log=forged.to_json()
    )
    assert "replay" in detail


async def test_event_log_that_does_not_parse(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    detail = await refused_attest(broker, guest, 401, "AttestationError", event_log="[1, 2]")
    assert "event log" in detail


async def test_event_log_naming_another_owner_is_denied(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=Ed25519PrivateKey.generate())
    await broker.put(guest.store_key_path, os.urandom(32))
    async with broker.guest_client() as client:
        assert (await guest.attest(client)).status_code == 200
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401
    assert error_variant(got) == "PolicyDeny"


async def test_event_log_without_owner_is_denied(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=None)
    await broker.put(guest.store_key_path, os.urandom(32))
    async with broker.guest_client() as client:
        assert (await guest.attest(client)).status_code == 200
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401
    assert error_variant(got) == "PolicyDeny"


@pytest.mark.parametrize(
    "options", [{"debug_td": True}, {"tcb_status": "OutOfDate"}], ids=["debug", "out-of-date"]
)
async def test_policy_refuses_debug_td_and_tcb_status(
    sim_runner: SimRunner, tmp_path: Any, options: dict[str, Any]
) -> None:
    async with sim_runner(**options) as sim, start_broker(sim, tmp_path, "kbs-claims") as broker:
        guest = Guest(sim, owner=broker.admin)
        assert (await broker.put(guest.store_key_path, os.urandom(32))).status_code == 200
        async with broker.guest_client() as client:
            attested = await guest.attest(client)
            assert attested.status_code == 200, attested.text
            got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert got.status_code == 401
        assert error_variant(got) == "PolicyDeny"


async def test_revoked_tcb_is_refused_at_attest(sim_runner: SimRunner, tmp_path: Any) -> None:
    async with (
        sim_runner(tcb_status="Revoked") as sim,
        start_broker(sim, tmp_path, "kbs-revoked") as broker,
    ):
        guest = Guest(sim, owner=broker.admin)
        detail = await refused_attest(broker, guest, 401, "AttestationError")
        assert "Revoked" in detail


def _rsa_jwk(alg: str) -> dict[str, str]:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    )

    def b64(n: int) -> str:
        import base64

        return (
            base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big"))
            .rstrip(b"=")
            .decode()
        )

    return {"kty": "RSA", "alg": alg, "n": b64(key.n), "e": b64(key.e)}


def _ec_jwk(curve: ec.EllipticCurve, crv: str, size: int) -> dict[str, str]:
    import base64

    numbers = ec.generate_private_key(curve).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()

    return {
        "kty": "EC",
        "crv": crv,
        "alg": "ECDH-ES+A256KW",
        "x": b64(numbers.x),
        "y": b64(numbers.y),
    }


@pytest.mark.parametrize(
    "jwk",
    [
        _rsa_jwk("RSA-OAEP"),
        _ec_jwk(ec.SECP384R1(), "P-384", 48),
        _ec_jwk(ec.SECP256K1(), "secp256k1", 32),
    ],
    ids=["rsa-oaep", "p-384", "secp256k1"],
)
async def test_refused_tee_keys(broker: Broker, jwk: dict[str, str]) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        body = guest.attest_body(nonce, TeeKeyPair.generate())
        body["runtime-data"]["tee-pubkey"] = jwk
        response = await client.post(f"{KBS}/attest", json=body)
        assert response.status_code == 400, response.text
        assert error_variant(response) == "SerdeError"
        await assert_not_released(broker, client, guest)


async def test_rsa_oaep_256_key_is_served(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    jwk = _rsa_jwk("RSA-OAEP-256")
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        body = guest.attest_body(
            nonce, TeeKeyPair.generate(), tee_pubkey=TeePublicKey.from_jwk(jwk)
        )
        response = await client.post(f"{KBS}/attest", json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "status", "variant"),
    [
        ({**AUTH_BODY, "version": "0.1.0"}, 401, "AttestationError"),
        ({**AUTH_BODY, "version": "0.4"}, 401, "AttestationError"),
        ({**AUTH_BODY, "tee": "sev"}, 401, "AttestationError"),
        ({"version": "0.4.0"}, 400, "SerdeError"),
        ([1], 400, "SerdeError"),
    ],
    ids=["old-version", "short-version", "other-tee", "missing-fields", "not-object"],
)
async def test_refused_auth(broker: Broker, body: object, status: int, variant: str) -> None:
    response = await broker.client.post(f"{KBS}/auth", json=body)
    assert response.status_code == status, response.text
    assert error_variant(response) == variant
    assert "kbs-session-id" not in response.cookies


async def test_auth_body_not_json(broker: Broker) -> None:
    response = await broker.client.post(f"{KBS}/auth", content=b"{not json")
    assert response.status_code == 400
    assert error_variant(response) == "SerdeError"


async def test_attest_body_not_json(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        await guest.auth(client)
        response = await client.post(f"{KBS}/attest", content=b"\xff\xfe")
        assert response.status_code == 400
        assert error_variant(response) == "SerdeError"
        await assert_not_released(broker, client, guest)


async def test_session_cap(start: Start) -> None:
    from tdx_kbs.sessions import SessionSettings

    async with start(sessions=SessionSettings(ttl=60, max_sessions=3)) as broker:
        for _ in range(3):
            assert (await broker.client.post(f"{KBS}/auth", json=AUTH_BODY)).status_code == 200
        full = await broker.client.post(f"{KBS}/auth", json=AUTH_BODY)
        assert full.status_code == 503
        assert error_variant(full) == "AttestationError"
        assert 1 <= int(full.headers["Retry-After"]) <= 61


# --- admin ---------------------------------------------------------------------------------


async def _nothing_stored(broker: Broker) -> None:
    assert await broker.store.audit_entries() == []
    assert await broker.store.policy_history() == []


def _header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _alg_none_token() -> str:
    import base64
    import json
    import time

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"role": "admin", "iat": now, "exp": now + 60}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize(
    "case", ["expired", "alg-none", "other-key", "too-long", "missing", "garbage"]
)
async def test_refused_admin_tokens(broker: Broker, case: str) -> None:
    import time

    now = int(time.time())
    headers = {
        "expired": _header(make_admin_token(broker.admin, lifetime=60, now=now - 120)),
        "alg-none": _header(_alg_none_token()),
        "other-key": _header(make_admin_token(Ed25519PrivateKey.generate())),
        "too-long": _header(make_admin_token(broker.admin, lifetime=3600)),
        "missing": {},
        "garbage": {"Authorization": "Bearer abc.def"},
    }[case]
    guest = Guest(broker.sim, owner=broker.admin)
    put = await broker.client.post(
        f"{KBS}/resource/{guest.store_key_path}", content=os.urandom(32), headers=headers
    )
    assert put.status_code == 401, put.text
    assert error_variant(put) == "AdminAuthAccess"
    policy = await broker.client.post(
        f"{KBS}/resource-policy", json={"policy": "cGFja2FnZSBwb2xpY3k"}, headers=headers
    )
    assert policy.status_code == 401
    assert error_variant(policy) == "AdminAuthAccess"
    assert await broker.store.get_resource(guest.store_key_path) is None
    await _nothing_stored(broker)


@pytest.mark.parametrize(
    "rego",
    [
        "package policy\n\nallow if {\n  input.a ==\n}\n",
        "this is not rego",
        "package other\n\ndefault allow := true\n",
    ],
    ids=["syntax", "not-rego", "other-package"],
)
async def test_policy_that_does_not_compile(broker: Broker, rego: str) -> None:
    response = await broker.set_policy(rego)
    assert response.status_code == 400, response.text
    assert error_variant(response) == "ParsePolicyError"
    detail = response.json()["detail"]
    assert "does not compile" in detail or "package policy" in detail
    await _nothing_stored(broker)


@pytest.mark.parametrize(
    "body",
    [{"policy": "not base64!"}, {"policy": 5}, {}, {"policy": "__8"}],
    ids=["bad-chars", "not-string", "missing", "not-utf8"],
)
async def test_policy_upload_body_refused(broker: Broker, body: object) -> None:
    response = await broker.client.post(
        f"{KBS}/resource-policy", json=body, headers=broker.admin_headers()
    )
    assert response.status_code == 400, response.text
    assert error_variant(response) == "ParsePolicyError"
    await _nothing_stored(broker)


@pytest.mark.parametrize(
    "path",
    [
        "tdx-identity/%2E%2E/x",
        "tdx-identity/store-key/..",
        "tdx-identity/store-key",
        "a/b/c/d",
        "a/b%00/c",
    ],
    ids=["dotdot-middle", "dotdot-tag", "two-segments", "four-segments", "nul"],
)
async def test_bad_resource_paths(broker: Broker, path: str) -> None:
    put = await broker.client.post(
        f"{KBS}/resource/{path}", content=b"x" * 32, headers=broker.admin_headers()
    )
    assert put.status_code == 404, put.text
    assert error_variant(put) == "InvalidRequestPath"
    got = await broker.client.get(f"{KBS}/resource/{path}")
    assert got.status_code == 404
    assert error_variant(got) == "InvalidRequestPath"
    await _nothing_stored(broker)


async def test_raw_dotdot_path_is_refused(broker: Broker) -> None:
    """`..` sent as is (httpx would normalize it away): a raw HTTP request."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(broker.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        b"GET /kbs/v0/resource/tdx-identity/../store-key HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 404 " in status_line, answer[:300]
    assert b"InvalidRequestPath" in answer or b"PluginNotFound" in answer


async def test_empty_upload_refused(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    put = await broker.client.post(
        f"{KBS}/resource/{guest.store_key_path}", content=b"", headers=broker.admin_headers()
    )
    assert put.status_code == 400
    await _nothing_stored(broker)


async def test_unknown_endpoint(broker: Broker) -> None:
    response = await broker.client.get(f"{KBS}/no-such-plugin/x")
    assert response.status_code == 404
    assert error_variant(response) == "PluginNotFound"


async def test_resource_request_without_token(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    await broker.put(guest.store_key_path, os.urandom(32))
    got = await broker.client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401
    assert error_variant(got) == "TokenNotFound"
    forged = await broker.client.get(
        f"{KBS}/resource/{guest.store_key_path}",
        headers={"Authorization": "Bearer " + make_admin_token(broker.admin)},
    )
    assert forged.status_code == 401
    assert error_variant(forged) == "TokenVerifierError"


async def test_unknown_resource_is_404_only_when_allowed(broker: Broker) -> None:
    """A path nothing is stored at is evaluated with `uploader: null`: 404 only when the policy
    allows it even so, else the same 401 as any denial (no probing for what is stored)."""
    rego = (
        "package policy\n\ndefault allow := false\n\n"
        'allow if input.resource.repository == "public"\n'
    )
    assert (await broker.set_policy(rego)).status_code == 200
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        assert (await guest.attest(client)).status_code == 200
        public = await client.get(f"{KBS}/resource/public/x/y")
        assert public.status_code == 404
        assert error_variant(public) == "ResourceNotFound"
        mine = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert mine.status_code == 401
        assert error_variant(mine) == "PolicyDeny"


async def test_session_outliving_its_token_releases_nothing(start: Start) -> None:
    from tdx_kbs.sessions import SessionSettings

    clock = Clock()
    async with start(clock=clock, sessions=SessionSettings(ttl=600), token_ttl=60) as broker:
        guest = Guest(broker.sim, owner=broker.admin)
        await broker.put(guest.store_key_path, os.urandom(32))
        async with broker.guest_client() as client:
            assert (await guest.attest(client)).status_code == 200
            assert (await client.get(f"{KBS}/resource/{guest.store_key_path}")).status_code == 200
            clock.now += 61
            got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
            assert got.status_code == 401
            assert error_variant(got) == "TokenVerifierError"
