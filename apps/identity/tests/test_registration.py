"""Operator and owner registration over HTTP, with fake quote source and registry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from unittest.mock import ANY

import pytest
from conftest import (
    AGREED,
    Running,
    instance_pubkey,
    pub,
    register_operator,
    register_owner,
    sign,
    sign_v2,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fakes import PPID, FakeQuoteSource, FakeRegistry

import tdx_quote
from tdx_identity import Settings
from tdx_identity.core.state import STATE_FILE_NAME
from tdx_report_data import (
    report_data_for_v2,
    verify_identity,
    verify_identity_v2,
    verify_possession,
)


def state_file(settings: Settings) -> Path:
    return settings.storage_path / STATE_FILE_NAME


async def test_platform_ppid_is_learned_once_at_start_from_a_zero_report_data_quote(
    running: Running, settings: Settings, quotes: FakeQuoteSource
) -> None:
    async with running() as client:
        first_tls = client.app.ctx.front.report_data()  # type: ignore[attr-defined]
        assert (await client.get("/instance/state")).json() == {
            "state": "fresh",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
    # Besides the PPID's, each start takes one quote: its TLS certificate's (another key).
    assert quotes.requests == [bytes(64), first_tls]
    assert json.loads(state_file(settings).read_text())["ppid"] == PPID.hex()
    async with running() as client:
        second_tls = client.app.ctx.front.report_data()  # type: ignore[attr-defined]
    assert quotes.requests == [bytes(64), first_tls, second_tls]
    assert second_tls != first_tls


async def test_operator_registration_records_a_quote_committing_to_the_operator(
    running: Running, registry: FakeRegistry, settings: Settings
) -> None:
    operator = Ed25519PrivateKey.generate()
    async with running() as client:
        instance = await instance_pubkey(client)
        response = await register_operator(client, operator)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "success"
        token = body["owner_token"]
        assert len(token) >= 43  # 32 random bytes, base64url
        assert (await client.get("/instance/state")).json() == {
            "state": "operator_registered",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }

    [request] = registry.accepted
    assert request.instance_pubkey == instance
    assert request.ppid == PPID
    assert request.owner is None
    assert request.operator is not None
    assert request.operator.pubkey == pub(operator)
    verify_identity_v2(instance, "operator", request.operator)
    assert registry.challenges == [request.challenge]
    quote = tdx_quote.parse_quote(request.attestation_quote)
    report_data = report_data_for_v2(instance, PPID, request.challenge, request.operator, None)
    assert quote.body.report_data == report_data
    verify_possession(instance, request.challenge, report_data, request.proof_of_possession)
    wire = request.to_json()
    assert base64.b64decode(wire["attestation_quote"]) == request.attestation_quote
    assert wire["challenge"] == request.challenge.hex()
    assert wire["instance_signature"] == request.proof_of_possession.hex()

    stored = state_file(settings).read_text()
    assert token not in stored
    assert json.loads(stored)["owner_token_sha256"] == hashlib.sha256(token.encode()).hexdigest()


async def test_bad_operator_signature_is_401_and_nothing_is_kept(
    running: Running, registry: FakeRegistry, settings: Settings
) -> None:
    operator, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        before = state_file(settings).read_bytes()
        instance = await instance_pubkey(client)
        response = await client.post(
            "/operator/register",
            json={"pubkey": pub(operator).hex(), "signature": sign(stranger, instance)},
        )
        assert response.status_code == 401
        assert "signature" in response.json()["error"]
        wrong_message = await client.post(
            "/operator/register",
            json={"pubkey": pub(operator).hex(), "signature": sign(operator, b"other")},
        )
        assert wrong_message.status_code == 401
        v1_raw = await client.post(
            "/operator/register",
            json={"pubkey": pub(operator).hex(), "signature": sign(operator, instance)},
        )
        assert v1_raw.status_code == 401
        as_owner = await client.post(
            "/operator/register",
            json={"pubkey": pub(operator).hex(), "signature": sign_v2(operator, "owner", instance)},
        )
        assert as_owner.status_code == 401
        assert (await client.get("/instance/state")).json() == {
            "state": "fresh",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
    assert registry.accepted == []
    assert registry.challenges == []
    assert state_file(settings).read_bytes() == before


async def test_v1_signatures_are_taken_only_with_the_flag_and_warned_at_each_use(
    running: Running,
    registry: FakeRegistry,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    compat = replace(settings, accept_v1_signatures=True)
    with caplog.at_level(logging.WARNING, logger="tdx_identity"):
        async with running(settings=compat) as client:
            instance = await instance_pubkey(client)
            response = await client.post(
                "/operator/register",
                json={"pubkey": pub(operator).hex(), "signature": sign(operator, instance)},
            )
            assert response.status_code == 200
            token = response.json()["owner_token"]
            assert (await register_owner(client, owner, token)).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--accept-v1-signatures" in w and "accepting" in w for w in warnings)
    assert sum(w.startswith("v1 signature accepted") for w in warnings) == 1
    first, second = registry.accepted
    assert first.operator is not None and second.owner is not None
    verify_identity(instance, first.operator)
    verify_identity_v2(instance, "owner", second.owner)
    async with running(settings=compat) as client:
        state = (await client.get("/instance/state")).json()
        assert state["registry_comparison"] == AGREED
    async with running() as client:
        state = (await client.get("/instance/state")).json()
        assert state["registry_comparison"]["status"] == "disagreed"
        assert "v2 signature" in state["registry_comparison"]["reason"]


async def test_a_failing_challenge_fetch_is_502_and_nothing_is_quoted_or_kept(
    running: Running, registry: FakeRegistry, quotes: FakeQuoteSource, settings: Settings
) -> None:
    async with running() as client:
        before = state_file(settings).read_bytes()
        asked = len(quotes.requests)
        registry.challenge_unavailable = True
        response = await register_operator(client, Ed25519PrivateKey.generate())
        assert response.status_code == 502
        assert response.json()["error"].startswith("registry")
        assert len(quotes.requests) == asked
        assert state_file(settings).read_bytes() == before
        registry.challenge_unavailable = False
        assert (await register_operator(client, Ed25519PrivateKey.generate())).status_code == 200
    assert len(registry.accepted) == 1


# R = the neutral point, S = 0: OpenSSL accepts it under the small-order keys below.
FORGED_SIGNATURE = "01" + "00" * 63


@pytest.mark.parametrize(
    "weak_key",
    [
        "01" + "00" * 31,
        "00" * 32,
        "ee" + "ff" * 30 + "7f",
        "ee" + "ff" * 31,
        "01" + "00" * 30 + "80",
    ],
)
async def test_small_order_identity_keys_are_401_even_with_a_verifying_signature(
    running: Running, registry: FakeRegistry, weak_key: str
) -> None:
    async with running() as client:
        instance = await instance_pubkey(client)
        # The forged signature does verify under the neutral-point key (OpenSSL does not refuse).
        if weak_key == "01" + "00" * 31:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(weak_key)).verify(
                bytes.fromhex(FORGED_SIGNATURE), instance
            )
        response = await client.post(
            "/operator/register", json={"pubkey": weak_key, "signature": FORGED_SIGNATURE}
        )
        assert response.status_code == 401
        assert "bad key" in response.json()["error"]
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        response = await client.post(
            "/owner/register",
            json={"pubkey": weak_key, "signature": FORGED_SIGNATURE},
            headers={"x-token": token["owner_token"]},
        )
        assert response.status_code == 401
    assert len(registry.accepted) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"pubkey": "00" * 32},
        {"pubkey": "zz" * 32, "signature": "00" * 64},
        {"pubkey": "00" * 31, "signature": "00" * 64},
        {"pubkey": "00" * 32, "signature": 5},
        ["pubkey"],
    ],
)
async def test_malformed_operator_body_is_400(running: Running, body: object) -> None:
    async with running() as client:
        response = await client.post("/operator/register", json=body)
        assert response.status_code == 400
        assert response.json()["error"]


async def test_not_json_is_400_with_a_json_error(running: Running) -> None:
    async with running() as client:
        response = await client.post("/operator/register", content=b"{not json")
        assert response.status_code == 400
        assert "error" in response.json()


async def test_second_operator_is_400_whoever_sends_it(running: Running) -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        assert (await register_operator(client, first)).status_code == 200
        for key in (first, second):
            response = await register_operator(client, key)
            assert response.status_code == 400
            assert response.json() == {"error": "Operator already registered"}


async def test_twenty_concurrent_operator_registrations_yield_exactly_one_token(
    running: Running, registry: FakeRegistry
) -> None:
    registry.delay = 0.01
    operators = [Ed25519PrivateKey.generate() for _ in range(20)]
    async with running() as client:
        responses = await asyncio.gather(*(register_operator(client, op) for op in operators))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [400] * 19
    tokens = [r.json()["owner_token"] for r in responses if r.status_code == 200]
    assert len(tokens) == 1
    assert len(registry.accepted) == 1
    for response in responses:
        if response.status_code == 400:
            assert response.json() == {"error": "Operator already registered"}


@pytest.mark.parametrize(
    ("registry_status", "expected"),
    [(403, 403), (401, 401), (400, 401), (404, 401), (None, 502)],
)
async def test_refused_or_failed_registration_leaves_the_state_file_unchanged(
    running: Running,
    registry: FakeRegistry,
    settings: Settings,
    registry_status: int | None,
    expected: int,
) -> None:
    if registry_status is None:
        registry.unavailable = True
    else:
        registry.refuse_with = registry_status
    operator = Ed25519PrivateKey.generate()
    async with running() as client:
        before = state_file(settings).read_bytes()
        response = await register_operator(client, operator)
        assert response.status_code == expected
        assert response.json()["error"].startswith("registry")
        assert state_file(settings).read_bytes() == before
        assert (await client.get("/instance/state")).json() == {
            "state": "fresh",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
        registry.unavailable, registry.refuse_with = False, None
        assert (await register_operator(client, operator)).status_code == 200
    assert not list(settings.storage_path.glob(".*.tmp"))


async def test_quote_for_other_report_data_is_refused_before_the_registry_sees_it(
    running: Running, registry: FakeRegistry, quotes: FakeQuoteSource, settings: Settings
) -> None:
    async with running() as client:
        before = state_file(settings).read_bytes()
        quotes.wrong_report_data = True
        response = await register_operator(client, Ed25519PrivateKey.generate())
        assert response.status_code == 503
        quotes.wrong_report_data, quotes.fail = False, True
        response = await register_operator(client, Ed25519PrivateKey.generate())
        assert response.status_code == 503
        assert state_file(settings).read_bytes() == before
    assert registry.accepted == []


async def test_owner_registration_binds_operator_and_owner(
    running: Running, registry: FakeRegistry
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        instance = await instance_pubkey(client)
        token = (await register_operator(client, operator)).json()["owner_token"]
        response = await register_owner(client, owner, token)
        assert response.status_code == 200
        assert response.json() == {"status": "success"}
        assert (await client.get("/instance/state")).json() == {
            "state": "owner_registered",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
    request = registry.accepted[-1]
    assert request.operator == registry.accepted[0].operator
    assert request.owner is not None and request.owner.pubkey == pub(owner)
    quote = tdx_quote.parse_quote(request.attestation_quote)
    assert quote.body.report_data == report_data_for_v2(
        instance, PPID, request.challenge, request.operator, request.owner
    )
    assert request.owner is not None
    verify_identity_v2(instance, "owner", request.owner)
    assert [r.challenge for r in registry.accepted] == registry.challenges
    assert len(set(registry.challenges)) == len(registry.challenges) == 2


async def test_owner_token_missing_wrong_or_reused_is_401(
    running: Running, registry: FakeRegistry
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        assert (await register_owner(client, owner, "anything")).status_code == 401
        assert (await register_owner(client, owner, None)).status_code == 401
        token = (await register_operator(client, operator)).json()["owner_token"]
        assert (await register_owner(client, owner, None)).status_code == 401
        assert (await register_owner(client, owner, "")).status_code == 401
        other_last = "B" if token.endswith("A") else "A"
        assert (await register_owner(client, owner, token[:-1] + other_last)).status_code == 401
        assert (await register_owner(client, owner, token + "x")).status_code == 401
        assert (await register_owner(client, owner, token)).status_code == 200
        reused = await register_owner(client, owner, token)
        assert reused.status_code == 401
        other = await register_owner(client, Ed25519PrivateKey.generate(), token)
        assert other.status_code == 401
    assert len(registry.accepted) == 2


async def test_owner_with_bad_signature_is_401_and_the_token_stays_usable(
    running: Running, settings: Settings
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, operator)).json()["owner_token"]
        before = state_file(settings).read_bytes()
        response = await client.post(
            "/owner/register",
            json={"pubkey": pub(owner).hex(), "signature": sign(owner, b"not the instance")},
            headers={"x-token": token},
        )
        assert response.status_code == 401
        assert state_file(settings).read_bytes() == before
        assert (await register_owner(client, owner, token)).status_code == 200


async def test_owner_refused_by_registry_keeps_the_token_and_the_state(
    running: Running, registry: FakeRegistry, settings: Settings
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, operator)).json()["owner_token"]
        before = state_file(settings).read_bytes()
        registry.refuse_with = 403
        assert (await register_owner(client, owner, token)).status_code == 403
        assert state_file(settings).read_bytes() == before
        registry.refuse_with = None
        assert (await register_owner(client, owner, token)).status_code == 200


async def test_restart_keeps_instance_key_and_registrations(
    running: Running, settings: Settings
) -> None:
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        instance = await instance_pubkey(client)
        token = (await register_operator(client, operator)).json()["owner_token"]
    async with running() as client:
        assert await instance_pubkey(client) == instance
        assert (await client.get("/instance/state")).json() == {
            "state": "operator_registered",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
        assert (await register_operator(client, operator)).status_code == 400
        assert (await register_owner(client, owner, token)).status_code == 200
    async with running() as client:
        assert (await client.get("/instance/state")).json() == {
            "state": "owner_registered",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "stopped",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
        assert (await register_owner(client, owner, token)).status_code == 401
