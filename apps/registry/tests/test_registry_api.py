"""POST /register and GET /instance over real HTTP: every status code of API.md."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_helpers import (
    UNISSUED,
    FakeCache,
    Instance,
    Running,
    build_test_quote,
    error_of,
    fetch_challenge,
    identity_json,
    openapi_client,
)

from tdx_registry import (
    DatabaseTarget,
    DcapQuoteVerifier,
    Settings,
    StoreError,
    UnsafeParseOnlyVerifier,
    create_app,
)
from tdx_service_kit import HttpLimits, RateLimit
from tdx_service_kit.testing import serve
from tdx_verify import PccsError, QuoteParseError, QuoteSignatureError, TcbStatusRejected

# ---- 200 ------------------------------------------------------------------------------------


async def test_register_then_get_returns_the_record(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        body = await instance.fresh(client, operator)
        registered = await client.post("/register", json=body)
        fetched = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert registered.status_code == 200
    assert registered.json() == {"status": "success"}
    assert fetched.status_code == 200
    record = fetched.json()
    assert record["instance_pubkey"] == instance.pubkey.hex()
    assert record["ppid"] == instance.ppid.hex()
    assert record["attestation_quote"] == body["attestation_quote"]
    assert record["operator"] == body["operator"]
    assert record["owner"] is None
    verification = record["verification"]
    assert verification["tcb_status"] == "UpToDate"
    assert verification["advisory_ids"] == ["INTEL-SA-00837"]
    assert verification["mr_td"] == bytes(range(48)).hex()
    assert verification["skipped"] is False
    assert verification["verified_at"].endswith("+00:00")
    assert record["registered_at"] == record["updated_at"]


async def test_same_data_again_is_accepted_and_refreshes(
    running: Running, cache: FakeCache
) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        assert (
            await client.post("/register", json=await instance.fresh(client, operator))
        ).status_code == 200
        first = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
        cache.tcb_status = "SWHardeningNeeded"
        again = await client.post("/register", json=await instance.fresh(client, operator))
        second = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert again.status_code == 200
    assert second["verification"]["tcb_status"] == "SWHardeningNeeded"
    assert second["registered_at"] == first["registered_at"]
    assert second["updated_at"] > first["updated_at"]


async def test_owner_can_be_added_with_the_same_operator(running: Running) -> None:
    instance = Instance()
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        assert (
            await client.post("/register", json=await instance.fresh(client, operator))
        ).status_code == 200
        with_owner = await instance.fresh(client, operator, owner)
        response = await client.post("/register", json=with_owner)
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert response.status_code == 200
    assert record["owner"] == with_owner["owner"]
    assert record["operator"] == with_owner["operator"]


async def test_uppercase_pubkey_path_finds_the_instance(running: Running) -> None:
    instance = Instance()
    async with running() as client:
        await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        response = await client.get(f"/instance/{instance.pubkey.hex().upper()}")
    assert response.status_code == 200


# ---- 400 ------------------------------------------------------------------------------------


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], Any], str]]:
    def set_(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda body: body.__setitem__(key, value)

    def set_in(role: str, key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda body: body[role].__setitem__(key, value)

    return [
        ("missing pubkey", lambda b: b.pop("instance_pubkey"), "'instance_pubkey' is missing"),
        ("short pubkey", set_("instance_pubkey", "ab" * 31), "'instance_pubkey' must be 32 bytes"),
        ("non-hex pubkey", set_("instance_pubkey", "zz" * 32), "'instance_pubkey' is not valid"),
        ("pubkey number", set_("instance_pubkey", 5), "'instance_pubkey' must be a hex string"),
        ("missing ppid", lambda b: b.pop("ppid"), "'ppid' is missing"),
        ("empty ppid", set_("ppid", ""), "'ppid' must be 1 to"),
        ("odd ppid", set_("ppid", "abc"), "'ppid' is not valid hex"),
        ("missing quote", lambda b: b.pop("attestation_quote"), "'attestation_quote'"),
        ("quote not base64", set_("attestation_quote", "***"), "not valid base64"),
        ("quote empty", set_("attestation_quote", ""), "'attestation_quote' is empty"),
        ("quote as hex list", set_("attestation_quote", [1]), "must be a base64 string"),
        ("unknown field", set_("extra", 1), "unknown field(s) in the request: extra"),
        ("operator a string", set_("operator", "x"), "'operator' must be an object or null"),
        ("operator short key", set_in("operator", "pubkey", "00"), "'operator.pubkey' must be 32"),
        ("operator bad sig", set_in("operator", "instance_signature", "0" * 10),
         "'operator.instance_signature' must be 64"),
        ("operator missing sig", lambda b: b["operator"].pop("identity_signature"),
         "'operator.identity_signature' is missing"),
        ("operator extra", set_in("operator", "name", "x"),
         "'operator' has unknown member(s) name"),
    ]  # fmt: skip


@pytest.mark.parametrize(("mutate", "fragment"), [m[1:] for m in _mutations()],
                         ids=[m[0] for m in _mutations()])  # fmt: skip
async def test_malformed_body_is_400_naming_the_problem(
    running: Running, cache: FakeCache, mutate: Callable[[dict[str, Any]], Any], fragment: str
) -> None:
    body = Instance().body(Ed25519PrivateKey.generate(), challenge=UNISSUED)
    mutate(body)
    async with running() as client:
        response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert fragment in error_of(response)
    assert cache.calls == 0


async def test_owner_without_operator_is_400(running: Running) -> None:
    instance = Instance()
    body = instance.body(
        Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), challenge=UNISSUED
    )
    body["operator"] = None
    async with running() as client:
        response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert "owner can only be registered together with an operator" in error_of(response)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b"", b'{"a": 1, "a": 2}'])
async def test_non_json_object_body_is_400(running: Running, raw: bytes) -> None:
    async with running() as client:
        response = await client.post("/register", content=raw)
    assert response.status_code == 400
    error_of(response)


async def test_garbage_quote_is_400(running: Running) -> None:
    async with running(verifier=UnsafeParseOnlyVerifier(), skip_tdx_auth=True) as client:
        body = await Instance().fresh(client, Ed25519PrivateKey.generate())
        body["attestation_quote"] = base64.b64encode(b"\x04\x00" + b"\x00" * 100).decode()
        response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert "not a valid TDX quote" in error_of(response)


async def test_quote_the_verifier_cannot_parse_is_400(running: Running, cache: FakeCache) -> None:
    cache.error = QuoteParseError("quote", "unsupported quote version 3")
    async with running() as client:
        response = await client.post(
            "/register", json=await Instance().fresh(client, Ed25519PrivateKey.generate())
        )
    assert response.status_code == 400
    assert "unsupported quote version 3" in error_of(response)


@pytest.mark.parametrize("path", ["ab" * 31, "ab" * 33, "zz" * 32, "ab" * 31 + "a "])
async def test_bad_instance_pubkey_path_is_400(running: Running, path: str) -> None:
    async with running() as client:
        response = await client.get(f"/instance/{path}")
    assert response.status_code == 400
    assert "64 hex characters" in error_of(response)


# ---- 401 ------------------------------------------------------------------------------------


async def test_identity_signature_by_another_key_is_401(running: Running, cache: FakeCache) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        body = await instance.fresh(client, operator)
        body["operator"]["instance_signature"] = (
            Ed25519PrivateKey.generate().sign(instance.pubkey).hex()
        )
        response = await client.post("/register", json=body)
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert "signature" in error_of(response)
    assert cache.calls == 0
    assert stored.status_code == 404


async def test_instance_countersignature_by_another_key_is_401(running: Running) -> None:
    instance, owner_key = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), owner_key)
        body["owner"]["identity_signature"] = (
            Ed25519PrivateKey.generate().sign(owner_key.public_key().public_bytes_raw()).hex()
        )
        response = await client.post("/register", json=body)
    assert response.status_code == 401
    assert "instance key's v2 signature over the owner key" in error_of(response)


async def test_quote_committing_to_other_data_is_401(running: Running) -> None:
    instance = Instance()
    async with running() as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), report_data=b"\x01" * 64)
        response = await client.post("/register", json=body)
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert "report_data does not commit" in error_of(response)
    assert stored.status_code == 404


async def test_quote_for_the_request_without_its_owner_is_401(running: Running) -> None:
    """A quote made for the operator-only request cannot carry an added owner."""
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        challenge = await fetch_challenge(client)
        operator_only = instance.body(operator, challenge=challenge)
        with_owner = instance.body(operator, Ed25519PrivateKey.generate(), challenge=challenge)
        with_owner["attestation_quote"] = operator_only["attestation_quote"]
        response = await client.post("/register", json=with_owner)
    assert response.status_code == 401


async def test_quote_of_another_platform_is_401(running: Running) -> None:
    instance = Instance()
    # report_data commits to the claimed PPID, but the quote's certification data has another
    async with running() as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), quote_ppid=b"\x77" * 16)
        response = await client.post("/register", json=body)
    assert response.status_code == 401
    assert "PPID does not match" in error_of(response)


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (QuoteSignatureError("quote signature", "not signed by the attestation key"),
         "quote verification failed at quote signature: not signed by the attestation key"),
        (TcbStatusRejected("tcb status", "OutOfDate is not accepted", tcb_status="OutOfDate",
                           advisory_ids=()), "tcb status: OutOfDate is not accepted"),
    ],
)  # fmt: skip
async def test_failed_verification_is_401_naming_the_step_and_stores_nothing(
    running: Running, cache: FakeCache, error: Exception, fragment: str
) -> None:
    cache.error = error
    instance = Instance()
    async with running() as client:
        response = await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert fragment in error_of(response)
    assert stored.status_code == 404


# ---- 403 ------------------------------------------------------------------------------------


async def test_another_operator_is_403_and_keeps_the_first(running: Running) -> None:
    instance, first = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        await client.post("/register", json=await instance.fresh(client, first))
        response = await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert response.status_code == 403
    assert "another operator" in error_of(response)
    assert record["operator"]["pubkey"] == first.public_key().public_bytes_raw().hex()


async def test_another_ppid_is_403(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        await client.post("/register", json=await instance.fresh(client, operator))
        moved = replace(instance, ppid=b"\x66" * 16)
        response = await client.post("/register", json=await moved.fresh(client, operator))
    assert response.status_code == 403
    assert "another PPID" in error_of(response)


async def test_another_owner_is_403(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        await client.post(
            "/register", json=await instance.fresh(client, operator, Ed25519PrivateKey.generate())
        )
        response = await client.post(
            "/register", json=await instance.fresh(client, operator, Ed25519PrivateKey.generate())
        )
    assert response.status_code == 403
    assert "another owner" in error_of(response)


async def test_dropping_the_owner_or_operator_is_403(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running() as client:
        await client.post(
            "/register", json=await instance.fresh(client, operator, Ed25519PrivateKey.generate())
        )
        without_owner = await client.post("/register", json=await instance.fresh(client, operator))
        without_any = await client.post("/register", json=await instance.fresh(client))
    assert without_owner.status_code == 403
    assert "owner" in error_of(without_owner)
    assert without_any.status_code == 403


async def test_concurrent_registrations_with_different_operators_have_one_winner(
    running: Running,
) -> None:
    instance = Instance()
    async with running() as client:
        bodies = [await instance.fresh(client, Ed25519PrivateKey.generate()) for _ in range(8)]
        responses = await asyncio.gather(*(client.post("/register", json=b) for b in bodies))
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [403] * 7
    winner = bodies[[r.status_code for r in responses].index(200)]
    assert record["operator"] == winner["operator"]


# ---- 404, 405, 413, 429, 5xx ------------------------------------------------------------------


async def test_unknown_instance_is_404(running: Running) -> None:
    async with running() as client:
        response = await client.get(f"/instance/{'ab' * 32}")
    assert response.status_code == 404
    assert error_of(response) == "no such instance"


async def test_unknown_route_is_404_json(running: Running) -> None:
    async with running() as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    error_of(response)


async def test_wrong_method_is_405_json(running: Running) -> None:
    async with running() as client:
        response = await client.get("/register")
    assert response.status_code == 405
    error_of(response)


async def test_body_over_the_limit_is_413(running: Running, cache: FakeCache) -> None:
    body = Instance().body(Ed25519PrivateKey.generate(), challenge=UNISSUED)
    async with running(limits=HttpLimits(max_body_bytes=1024)) as client:
        response = await client.post("/register", json=body)
    assert response.status_code == 413
    error_of(response)
    assert cache.calls == 0


async def test_rate_limit_is_429_with_retry_after(running: Running) -> None:
    async with running(rate_limit=RateLimit(per_second=0.5, burst=3)) as client:
        statuses = [(await client.get(f"/instance/{'ab' * 32}")).status_code for _ in range(4)]
        limited = await client.get(f"/instance/{'ab' * 32}")
    assert statuses == [404, 404, 404, 429]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    error_of(limited)


async def test_pccs_failure_is_502_and_stores_nothing(running: Running, cache: FakeCache) -> None:
    cache.error = PccsError("GET /tdx/certification/v4/tcb: connection refused")
    instance = Instance()
    async with running() as client:
        response = await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 502
    assert "PCCS" in error_of(response)
    assert stored.status_code == 404


async def test_unexpected_failure_is_500_without_details(
    running: Running, cache: FakeCache
) -> None:
    cache.error = RuntimeError("secret internals /etc/shadow")
    async with running() as client:
        response = await client.post(
            "/register", json=await Instance().fresh(client, Ed25519PrivateKey.generate())
        )
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


# ---- SKIP_TDX_AUTH ------------------------------------------------------------------------------


async def test_skip_mode_parses_only_but_still_checks_the_binding(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running(verifier=UnsafeParseOnlyVerifier(), skip_tdx_auth=True) as client:
        good = await client.post("/register", json=await instance.fresh(client, operator))
        other = Instance()
        unbound = await client.post(
            "/register", json=await other.fresh(client, operator, report_data=b"\0" * 64)
        )
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert good.status_code == 200
    assert unbound.status_code == 401
    assert record["verification"]["skipped"] is True
    assert record["verification"]["tcb_status"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("SKIP_TDX_AUTH IS ON" in w for w in warnings)  # at start
    assert sum("WITHOUT DCAP verification" in w for w in warnings) == 2  # each registration


async def test_skip_mode_still_reads_the_ppid_from_the_quote(running: Running) -> None:
    instance = Instance()
    async with running(verifier=UnsafeParseOnlyVerifier(), skip_tdx_auth=True) as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), quote_ppid=b"\x01" * 16)
        response = await client.post("/register", json=body)
    assert response.status_code == 401
    assert "PPID does not match" in error_of(response)


def test_test_quotes_are_real_quotes() -> None:
    from tdx_quote import parse_quote

    quote = parse_quote(build_test_quote(b"\x09" * 64, b"\x08" * 16))
    assert quote.body.report_data == b"\x09" * 64
    assert identity_json(None) is None


async def test_real_dcap_verifier_is_wired_in_by_default(tmp_path: Path, app_name: str) -> None:
    """Without an injected verifier the app verifies with tdx_verify: a quote that carries no
    QE report certification data is refused before any PCCS fetch (the PCCS here is dead)."""
    settings = Settings(
        database=DatabaseTarget(sqlite_path=tmp_path / "r.db"),
        pccs_url="http://127.0.0.1:9",
        rate_limit=None,
    )
    instance = Instance()
    async with (
        serve(create_app(settings, name=app_name)) as url,
        openapi_client(url) as client,
    ):
        response = await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 400
    assert "type 6" in error_of(response)
    assert stored.status_code == 404


class BrokenStore:
    """A record store whose database is down."""

    async def get(self, instance_pubkey: bytes) -> None:
        raise StoreError("connection refused")

    async def register(self, instance_pubkey: bytes, merge: Any, **kwargs: Any) -> Any:
        raise StoreError("connection refused")

    async def challenge_open(self, nonce: bytes, *, now: Any) -> bool:
        raise StoreError("connection refused")

    async def issue_challenge(self, nonce: bytes, expires_at: Any, **kwargs: Any) -> bool:
        raise StoreError("connection refused")

    async def consume_challenge(self, nonce: bytes, *, now: Any) -> bool:
        raise StoreError("connection refused")

    async def instance_keys(self, *, after: bytes | None, limit: int) -> list[bytes]:
        raise StoreError("connection refused")

    async def close(self) -> None:
        return None

    async def log_checkpoint_state(self) -> tuple[int, bytes]:
        raise StoreError("connection refused")

    async def log_entries(self, start: int, end: int) -> list[Any]:
        raise StoreError("connection refused")

    async def log_inclusion(self, index: int, tree_size: int) -> list[bytes]:
        raise StoreError("connection refused")

    async def log_consistency(self, first: int, second: int) -> list[bytes]:
        raise StoreError("connection refused")


async def test_database_failure_is_503(tmp_path: Path, app_name: str, cache: FakeCache) -> None:
    settings = Settings(database=DatabaseTarget(sqlite_path=tmp_path / "r.db"), rate_limit=None)
    app = create_app(
        settings, name=app_name, store=BrokenStore(), verifier=DcapQuoteVerifier(cache)
    )
    async with serve(app) as url, openapi_client(url) as client:
        challenge = await client.get("/challenge")
        registered = await client.post(
            "/register", json=Instance().body(Ed25519PrivateKey.generate(), challenge=UNISSUED)
        )
        fetched = await client.get(f"/instance/{'ab' * 32}")
        log_reads = [
            await client.get(path)
            for path in (
                "/log/checkpoint",
                "/log/entries?start=0&end=1",
                "/log/proof/inclusion?index=0&tree_size=1",
                "/log/proof/consistency?first=1&second=1",
            )
        ]
    assert challenge.status_code == 503
    assert registered.status_code == 503
    assert fetched.status_code == 503
    assert [r.status_code for r in log_reads] == [503] * 4
    assert "nothing was stored" in error_of(registered)
    assert "connection refused" not in registered.text
