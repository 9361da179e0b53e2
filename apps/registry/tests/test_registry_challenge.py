"""GET /challenge and v2 POST /register: fresh, single-use challenges, the proof of possession,
v2 identity signatures in their role, and v1 only in compatibility mode."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pony.orm import db_session
from registry_helpers import (
    UNISSUED,
    FakeCache,
    Instance,
    Running,
    error_of,
    fetch_challenge,
    identity_for,
    identity_v2_for,
)
from test_registry_store import make_record

from tdx_quote import parse_quote
from tdx_registry import ChallengeSettings, DatabaseTarget, InstanceRecord, PonyRecordStore
from tdx_registry.store import ChallengeNotConsumed, Consume
from tdx_registry.verification import CheckedQuote, DcapQuoteVerifier
from tdx_report_data import IdentityInfo, report_data_for_v2, verify_identity_v2, verify_possession


class Clock:
    """The registry's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 3, 0, 0, 250_000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def _record(client: Any, instance: Instance) -> Any:
    response = await client.get(f"/instance/{instance.pubkey.hex()}")
    return response.json() if response.status_code == 200 else response.status_code


# ---- GET /challenge -------------------------------------------------------------------------


async def test_challenge_is_a_fresh_uncacheable_nonce_with_its_expiry(running: Running) -> None:
    clock = Clock()
    async with running(clock=clock) as client:
        first = await client.get("/challenge")
        second = await client.get("/challenge")
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-store"
    body = first.json()
    assert set(body) == {"nonce", "expires_at"}
    assert re.fullmatch(r"[0-9a-f]{64}", body["nonce"])
    assert body["expires_at"] == "2026-12-02T03:01:00Z"
    assert second.json()["nonce"] != body["nonce"]


async def test_challenge_ttl_setting_sets_the_expiry(running: Running) -> None:
    async with running(clock=Clock(), challenges=ChallengeSettings(ttl=600)) as client:
        body = (await client.get("/challenge")).json()
    assert body["expires_at"] == "2026-12-02T03:10:00Z"


async def test_outstanding_challenges_are_capped_with_retry_after(running: Running) -> None:
    clock = Clock()
    settings = ChallengeSettings(ttl=30, max_outstanding=2)
    async with running(clock=clock, challenges=settings) as client:
        issued = [(await client.get("/challenge")).status_code for _ in range(2)]
        refused = await client.get("/challenge")
        clock.advance(30)
        after_expiry = await client.get("/challenge")
    assert issued == [200, 200]
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "30"
    assert "too many outstanding challenges" in error_of(refused)
    assert after_expiry.status_code == 200


# ---- v2 POST /register ----------------------------------------------------------------------


async def test_registration_over_a_fresh_challenge_is_accepted_and_verifiable_offline(
    running: Running,
) -> None:
    instance, operator, owner = (
        Instance(),
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    async with running() as client:
        body = await instance.fresh(client, operator, owner)
        response = await client.post("/register", json=body)
        record = await _record(client, instance)
    assert response.status_code == 200, response.text
    assert record["binding_version"] == 2
    assert record["challenge"] == body["challenge"]
    assert record["proof_of_possession"] == body["instance_signature"]
    # What a verifier does with the record alone:
    challenge = bytes.fromhex(record["challenge"])
    op = IdentityInfo.from_object(record["operator"], name="operator")
    ow = IdentityInfo.from_object(record["owner"], name="owner")
    verify_identity_v2(instance.pubkey, "operator", op)
    verify_identity_v2(instance.pubkey, "owner", ow)
    binding = report_data_for_v2(instance.pubkey, instance.ppid, challenge, op, ow)
    quote = parse_quote(base64.b64decode(record["attestation_quote"]))
    assert quote.body.report_data == binding
    verify_possession(
        instance.pubkey, challenge, binding, bytes.fromhex(record["proof_of_possession"])
    )


async def test_the_same_challenge_twice_is_401_and_leaves_the_record(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        challenge = await fetch_challenge(client)
        first = await client.post("/register", json=instance.body(operator, challenge=challenge))
        before = await _record(client, instance)
        owner = Ed25519PrivateKey.generate()
        again = await client.post(
            "/register", json=instance.body(operator, owner, challenge=challenge)
        )
        after = await _record(client, instance)
    assert first.status_code == 200
    assert again.status_code == 401
    assert error_of(again).startswith("challenge unknown, expired or already used")
    assert after == before


async def test_a_replayed_accepted_registration_is_401_and_leaves_the_record(
    running: Running, cache: FakeCache
) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        captured = await instance.fresh(client, operator)
        assert (await client.post("/register", json=captured)).status_code == 200
        before = await _record(client, instance)
        calls = cache.calls
        replayed = await client.post("/register", json=captured)
        after = await _record(client, instance)
    assert replayed.status_code == 401
    assert error_of(replayed).startswith("challenge")
    assert after == before
    assert cache.calls == calls  # refused before any quote verification


async def test_an_expired_challenge_is_401(running: Running) -> None:
    clock, instance = Clock(), Instance()
    async with running(clock=clock) as client:
        late = await instance.fresh(client)
        in_time = await instance.fresh(client)
        clock.advance(59.7)  # 03:00:59.95: the second before expires_at
        accepted = await client.post("/register", json=in_time)
        clock.advance(0.05)  # 03:01:00 = expires_at
        refused = await client.post("/register", json=late)
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 401
    assert error_of(refused).startswith("challenge unknown, expired or already used")


class SlowVerifier:
    """The fake cache's DCAP verification, during which `clock` moves on `seconds`."""

    def __init__(self, cache: FakeCache, clock: Clock, seconds: float) -> None:
        self._inner = DcapQuoteVerifier(cache)
        self._clock, self._seconds = clock, seconds

    async def check(self, quote: bytes, *, now: datetime) -> CheckedQuote:
        checked = await self._inner.check(quote, now=now)
        self._clock.advance(self._seconds)
        return checked

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_challenge_open_on_arrival_is_consumed_even_if_it_expires_meanwhile(
    running: Running, cache: FakeCache
) -> None:
    """The registration's transaction consumes the challenge as of its check on arrival: a
    registration that arrived in time is not refused for how long its verification took (a
    PCCS fetch), and the challenge is used up."""
    clock, instance = Clock(), Instance()
    async with running(clock=clock, verifier=SlowVerifier(cache, clock, 5.0)) as client:
        body = await instance.fresh(client)
        clock.advance(59.0)  # 1 s of the challenge left on arrival, 5 s of verification
        accepted = await client.post("/register", json=body)
        again = await client.post("/register", json=body)
    assert accepted.status_code == 200, accepted.text
    assert again.status_code == 401
    assert error_of(again).startswith("challenge unknown, expired or already used")


async def test_an_unknown_challenge_is_401(running: Running, cache: FakeCache) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post("/register", json=instance.body(challenge=UNISSUED))
        stored = await _record(client, instance)
    assert response.status_code == 401
    assert error_of(response).startswith("challenge unknown")
    assert stored == 404
    assert cache.calls == 0


@pytest.mark.parametrize("refusal", ["possession", "binding", "conflict"])
async def test_a_refused_registration_consumes_its_challenge(
    running: Running, refusal: str
) -> None:
    """Refused after the challenge was found open (a bad proof of possession, a quote over
    another PPID, or at the merge rule in the record's transaction): the challenge is used up
    all the same, so the same challenge with a good body is 401."""
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        if refusal == "conflict":
            first = await instance.fresh(client, operator)
            assert (await client.post("/register", json=first)).status_code == 200
        challenge = await fetch_challenge(client)
        bad = {
            "possession": lambda: instance.body(
                operator, challenge=challenge, proof_key=Ed25519PrivateKey.generate()
            ),
            "binding": lambda: instance.body(
                operator, challenge=challenge, quote_ppid=b"\x01" * 16
            ),
            "conflict": lambda: instance.body(Ed25519PrivateKey.generate(), challenge=challenge),
        }[refusal]()
        refused = await client.post("/register", json=bad)
        again = await client.post("/register", json=instance.body(operator, challenge=challenge))
    assert refused.status_code in (401, 403), refused.text
    assert not error_of(refused).startswith("challenge")
    assert again.status_code == 401
    assert error_of(again).startswith("challenge unknown, expired or already used")


@pytest.mark.parametrize("missing", ["challenge", "instance_signature"])
async def test_challenge_and_proof_come_together_or_400(running: Running, missing: str) -> None:
    async with running() as client:
        body = await Instance().fresh(client)
        del body[missing]
        response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert "come together" in error_of(response)


async def test_squatting_another_instance_key_without_its_proof_is_401(
    running: Running, cache: FakeCache
) -> None:
    """A TD on another platform registers a fresh instance's public key first: its quote can
    commit to that key, but it cannot sign the proof of possession with it."""
    victim = Instance()
    squatter_key = Ed25519PrivateKey.generate()
    squatter = Instance(key=victim.key, ppid=b"\x77" * 16)  # only its public half is used
    async with running() as client:
        squat = squatter.body(challenge=await fetch_challenge(client), proof_key=squatter_key)
        refused = await client.post("/register", json=squat)
        missing = await _record(client, victim)
        genuine = await client.post("/register", json=await victim.fresh(client))
        record = await _record(client, victim)
    assert refused.status_code == 401
    assert error_of(refused).startswith("proof of possession failed")
    assert cache.calls == 1  # the genuine registration's: the squatter's quote was never verified
    assert missing == 404
    assert genuine.status_code == 200, genuine.text
    assert record["ppid"] == victim.ppid.hex()


async def test_a_v2_operator_signature_in_the_owner_role_is_401(running: Running) -> None:
    instance, operator, owner = (
        Instance(),
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    as_operator = identity_v2_for(instance.key, "operator", owner)
    async with running() as client:
        response = await client.post(
            "/register", json=await instance.fresh(client, operator, as_operator)
        )
        stored = await _record(client, instance)
    assert response.status_code == 401
    assert "the owner key's v2 signature" in error_of(response)
    assert stored == 404


async def test_concurrent_registrations_naming_one_challenge_have_one_winner(
    running: Running,
) -> None:
    instance = Instance()
    async with running() as client:
        challenge = await fetch_challenge(client)
        bodies = [
            instance.body(Ed25519PrivateKey.generate(), challenge=challenge) for _ in range(4)
        ]
        responses = await asyncio.gather(*(client.post("/register", json=b) for b in bodies))
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401]


# ---- compatibility: v1 ----------------------------------------------------------------------


async def test_v1_identity_signatures_are_401_without_the_flag(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    v1_operator = identity_for(instance.key, operator)
    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client, v1_operator))
    assert response.status_code == 401
    assert "v2 signature" in error_of(response)


async def test_v1_identity_signatures_are_accepted_with_the_flag_and_logged(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    v1_operator = identity_for(instance.key, operator)
    async with running(accept_v1_registrations=True) as client:
        response = await client.post("/register", json=await instance.fresh(client, v1_operator))
        record = await _record(client, instance)
    assert response.status_code == 200, response.text
    assert record["binding_version"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("v1 identity signature in a v2 registration" in w for w in warnings)


async def test_a_v1_body_is_401_without_the_flag(running: Running, cache: FakeCache) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post(
            "/register", json=instance.v1_body(Ed25519PrivateKey.generate())
        )
        stored = await _record(client, instance)
    assert response.status_code == 401
    assert error_of(response).startswith("v1 registration refused")
    assert stored == 404
    assert cache.calls == 0


async def test_a_v1_body_is_accepted_with_the_flag_and_logged(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    instance = Instance()
    async with running(accept_v1_registrations=True) as client:
        response = await client.post(
            "/register", json=instance.v1_body(Ed25519PrivateKey.generate())
        )
        record = await _record(client, instance)
    assert response.status_code == 200, response.text
    assert (record["binding_version"], record["challenge"], record["proof_of_possession"]) == (
        1,
        None,
        None,
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(w.startswith("V1: accepting v1 registrations") for w in warnings)  # at start
    assert any(w.startswith("V1: accepted a v1 registration") for w in warnings)  # this one


async def test_a_v1_registration_never_replaces_a_v2_record(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running(accept_v1_registrations=True) as client:
        assert (
            await client.post("/register", json=await instance.fresh(client, operator))
        ).status_code == 200
        before = await _record(client, instance)
        refused = await client.post("/register", json=instance.v1_body(operator))
        after = await _record(client, instance)
    assert refused.status_code == 403
    assert "no regression: a v1 registration" in error_of(refused)
    assert after == before


# ---- the store, on each backend (two processes sharing one database) ------------------------


async def test_two_stores_on_one_database_never_both_consume_a_nonce(
    db_target: DatabaseTarget,
) -> None:
    stores = [await PonyRecordStore.open(db_target) for _ in range(2)]
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    try:
        for round_ in range(10):
            nonce = bytes([round_]) * 32
            assert await stores[round_ % 2].issue_challenge(
                nonce, now + timedelta(seconds=60), now=now, max_outstanding=100
            )
            results = await asyncio.gather(
                *(store.consume_challenge(nonce, now=now) for store in stores)
            )
            assert sorted(results) == [False, True]
    finally:
        for store in stores:
            await store.close()


async def test_expired_challenges_are_refused_and_purged_in_bounded_batches(
    db_target: DatabaseTarget,
) -> None:
    store = await PonyRecordStore.open(db_target)
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    expiry = now + timedelta(seconds=5)
    try:
        for i in range(150):
            assert await store.issue_challenge(
                i.to_bytes(32, "big"), expiry, now=now, max_outstanding=150
            )
        assert not await store.issue_challenge(b"\xff" * 32, expiry, now=now, max_outstanding=150)
        assert not await store.consume_challenge((0).to_bytes(32, "big"), now=expiry)
        later = expiry + timedelta(seconds=1)
        assert await store.issue_challenge(b"\xfe" * 32, later, now=expiry, max_outstanding=1)
        assert await _challenge_rows(store) == 150 - 100 + 1  # one batch of 100 purged
        assert await store.issue_challenge(b"\xfd" * 32, later, now=expiry, max_outstanding=3)
        assert await _challenge_rows(store) == 2  # the last 50 expired ones went too
    finally:
        await store.close()


async def _challenge_rows(store: PonyRecordStore) -> int:
    """How many challenges the database holds, read on the store's own connection."""

    @db_session  # type: ignore[untyped-decorator]
    def count() -> int:
        row = store._db.execute("SELECT COUNT(*) FROM challenges").fetchone()
        return int(row[0])

    rows: int = await asyncio.get_running_loop().run_in_executor(store._executor, count)
    return rows


async def test_with_the_flag_a_signature_neither_v2_nor_v1_is_401_naming_v2(
    running: Running,
) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running(accept_v1_registrations=True) as client:
        body = await instance.fresh(client, operator)
        body["operator"]["instance_signature"] = operator.sign(b"something else").hex()
        response = await client.post("/register", json=body)
    assert response.status_code == 401
    assert "the operator key's v2 signature over the instance key" in error_of(response)


async def test_a_registration_consumes_its_challenge_in_its_own_transaction(
    db_target: DatabaseTarget,
) -> None:
    """`register(..., consume=)`: the nonce goes with the record, in one commit; a nonce that
    is not open (never issued, or consumed by the other store first) writes nothing."""
    stores = [await PonyRecordStore.open(db_target) for _ in range(2)]
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    try:
        nonce = b"\x42" * 32
        assert await stores[0].issue_challenge(
            nonce, now + timedelta(seconds=60), now=now, max_outstanding=100
        )
        assert await stores[1].challenge_open(nonce, now=now)
        assert not await stores[1].challenge_open(nonce, now=now + timedelta(seconds=60))
        instances = [Instance(), Instance()]

        def merge_of(instance: Instance) -> Callable[[InstanceRecord | None], InstanceRecord]:
            return lambda _existing: make_record(instance)

        results = await asyncio.gather(
            *(
                store.register(instance.pubkey, merge_of(instance), consume=Consume(nonce, now))
                for store, instance in zip(stores, instances, strict=True)
            ),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, InstanceRecord)]
        lost = [r for r in results if isinstance(r, ChallengeNotConsumed)]
        assert (len(won), len(lost)) == (1, 1), results
        stored = [await stores[0].get(i.pubkey) for i in instances]
        assert sum(record is not None for record in stored) == 1
        assert not await stores[0].challenge_open(nonce, now=now)
        unissued = Instance()
        with pytest.raises(ChallengeNotConsumed):
            await stores[0].register(
                unissued.pubkey,
                lambda _existing: make_record(unissued),
                consume=Consume(UNISSUED, now),
            )
        assert await stores[0].get(unissued.pubkey) is None
    finally:
        for store in stores:
            await store.close()
