"""End to end: operator and owner register with the real identity service, registry and sim.

The registry verifies every sim quote through the full DCAP path (trusting the sim's root only
because the test names it in TDX_TRUSTED_ROOT_CA)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_quote import parse_quote
from tdx_report_data import IdentityInfo, report_data_for
from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _instance_pubkey(stack: Stack) -> bytes:
    r = httpx.get(stack.identity.url + "/instance/pubkey")
    assert r.status_code == 200
    return bytes.fromhex(r.json()["pubkey"])


def _signed_body(key: Ed25519PrivateKey, instance_pubkey: bytes) -> dict[str, str]:
    return {"pubkey": _raw(key).hex(), "signature": key.sign(instance_pubkey).hex()}


def _register_operator(stack: Stack, key: Ed25519PrivateKey) -> httpx.Response:
    body = _signed_body(key, _instance_pubkey(stack))
    return httpx.post(stack.identity.url + "/operator/register", json=body, timeout=30)


def _register_owner(stack: Stack, key: Ed25519PrivateKey, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"x-token": token}
    body = _signed_body(key, _instance_pubkey(stack))
    return httpx.post(
        stack.identity.url + "/owner/register", json=body, headers=headers, timeout=30
    )


def _record(stack: Stack, instance_pubkey: bytes) -> httpx.Response:
    return httpx.get(stack.registry.url + f"/instance/{instance_pubkey.hex()}")


def _assert_error(r: httpx.Response, status: int | tuple[int, ...]) -> str:
    expected = (status,) if isinstance(status, int) else status
    assert r.status_code in expected, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return str(body["error"])


def test_operator_then_owner_are_recorded_with_a_quote_committing_to_both(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    instance = _instance_pubkey(stack)
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    r = _register_operator(stack, operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success"
    token = r.json()["owner_token"]
    assert len(token) >= 22  # at least 128 random bits, url-safe base64

    record = _record(stack, instance).json()
    assert record["operator"]["pubkey"] == _raw(operator).hex()
    assert record["owner"] is None
    assert record["verification"]["tcb_status"] == "UpToDate"

    r = _register_owner(stack, owner, token)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success"}

    record = _record(stack, instance).json()
    assert record["owner"]["pubkey"] == _raw(owner).hex()
    # The stored quote commits to exactly this instance, PPID, operator and owner.
    quote = parse_quote(base64.b64decode(record["attestation_quote"]), allow_zero_padding=True)
    expected = report_data_for(
        instance,
        bytes.fromhex(record["ppid"]),
        IdentityInfo.from_object(record["operator"], name="operator"),
        IdentityInfo.from_object(record["owner"], name="owner"),
    )
    assert quote.body.report_data == expected


def test_bad_operator_signature_is_401_and_nothing_is_kept(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    instance = _instance_pubkey(stack)
    key = Ed25519PrivateKey.generate()
    body = {"pubkey": _raw(key).hex(), "signature": key.sign(b"not the instance key").hex()}
    r = httpx.post(stack.identity.url + "/operator/register", json=body)
    _assert_error(r, 401)
    assert _record(stack, instance).status_code == 404
    # The slot is still free for the real operator.
    assert _register_operator(stack, key).status_code == 200


def test_second_operator_is_refused_with_400(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    first = Ed25519PrivateKey.generate()
    assert _register_operator(stack, first).status_code == 200
    for key in (Ed25519PrivateKey.generate(), first):
        reason = _assert_error(_register_operator(stack, key), 400)
        assert "Operator already registered" in reason
    record = _record(stack, _instance_pubkey(stack)).json()
    assert record["operator"]["pubkey"] == _raw(first).hex()


def test_concurrent_operator_registrations_have_exactly_one_winner(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    keys = [Ed25519PrivateKey.generate() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
        results = list(pool.map(lambda k: _register_operator(stack, k), keys))
    winners = [k for k, r in zip(keys, results, strict=True) if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text) for r in results]
    for r in results:
        if r.status_code != 200:
            assert "Operator already registered" in _assert_error(r, 400)
    record = _record(stack, _instance_pubkey(stack)).json()
    assert record["operator"]["pubkey"] == _raw(winners[0]).hex()


def test_owner_tokens_wrong_missing_and_reused_are_refused(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    owner = Ed25519PrivateKey.generate()
    _assert_error(_register_owner(stack, owner, "no-operator-yet"), 401)
    token = _register_operator(stack, Ed25519PrivateKey.generate()).json()["owner_token"]
    _assert_error(_register_owner(stack, owner, None), 401)
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    _assert_error(_register_owner(stack, owner, wrong), 401)
    # A bad owner signature with the right token does not burn the token.
    bad = {"pubkey": _raw(owner).hex(), "signature": owner.sign(b"x").hex()}
    r = httpx.post(stack.identity.url + "/owner/register", json=bad, headers={"x-token": token})
    _assert_error(r, 401)
    assert _register_owner(stack, owner, token).status_code == 200
    _assert_error(_register_owner(stack, owner, token), 401)
    _assert_error(_register_owner(stack, Ed25519PrivateKey.generate(), token), 401)
    record = _record(stack, _instance_pubkey(stack)).json()
    assert record["owner"]["pubkey"] == _raw(owner).hex()


def test_registry_that_does_not_trust_the_sim_root_keeps_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(trust_sim_root=False)
    instance = _instance_pubkey(stack)
    key = Ed25519PrivateKey.generate()
    _assert_error(_register_operator(stack, key), (401, 403, 502))
    assert _record(stack, instance).status_code == 404
    # The identity service kept nothing either: it is still waiting for its first operator.
    state = httpx.get(stack.identity.url + "/instance/state").json()
    assert state["state"].lower() == "fresh"


@pytest.mark.parametrize(
    ("flags", "reason_word"),
    [
        (["--debug-td"], "debug"),
        (["--tcb-status", "OutOfDate"], "OutOfDate"),
        (["--revoke-pck"], "revoked"),
    ],
)
def test_refused_platforms_leave_nothing_behind(
    make_stack: Callable[..., Stack], flags: list[str], reason_word: str
) -> None:
    stack = make_stack(sim_flags=flags)
    instance = _instance_pubkey(stack)
    reason = _assert_error(_register_operator(stack, Ed25519PrivateKey.generate()), (401, 403, 502))
    assert reason_word.lower() in reason.lower(), reason
    assert _record(stack, instance).status_code == 404
    assert httpx.get(stack.identity.url + "/instance/state").json()["state"].lower() == "fresh"


def test_restart_of_every_program_keeps_keys_registrations_and_records(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    instance = _instance_pubkey(stack)
    token = _register_operator(stack, Ed25519PrivateKey.generate()).json()["owner_token"]
    owner = Ed25519PrivateKey.generate()
    assert _register_owner(stack, owner, token).status_code == 200
    before = _record(stack, instance).json()

    stack.restart("identity", "registry", "sim")

    assert _instance_pubkey(stack) == instance
    after = _record(stack, instance).json()
    for field in ("ppid", "operator", "owner"):
        assert after[field] == before[field]
    # A sim restart is a reboot of the simulated TD: the identity service may re-register with a
    # fresh quote (new RTMR3 log), which must still commit to the same binding.
    quote = parse_quote(base64.b64decode(after["attestation_quote"]), allow_zero_padding=True)
    assert quote.body.report_data == report_data_for(
        instance,
        bytes.fromhex(after["ppid"]),
        IdentityInfo.from_object(after["operator"], name="operator"),
        IdentityInfo.from_object(after["owner"], name="owner"),
    )
    assert after["verification"]["tcb_status"] == "UpToDate"
    assert httpx.get(stack.identity.url + "/instance/state").json()["state"].lower() == (
        "owner_registered"
    )
    _assert_error(_register_owner(stack, owner, token), 401)
    reason = _assert_error(_register_operator(stack, Ed25519PrivateKey.generate()), 400)
    assert "Operator already registered" in reason


def test_registry_error_bodies_are_json(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    _assert_error(httpx.get(stack.registry.url + "/instance/xyz"), 400)
    _assert_error(httpx.get(stack.registry.url + "/instance/" + "ab" * 32), 404)
    _assert_error(httpx.post(stack.registry.url + "/register", content=b"{not json"), 400)
    r = httpx.post(stack.identity.url + "/operator/register", content=json.dumps([1]).encode())
    _assert_error(r, 400)
