"""End to end: operator and owner register with the real identity service, registry and sim.

The registry verifies every sim quote through the full DCAP path (trusting the sim's root only
because the test names it in TDX_TRUSTED_ROOT_CA). Every registration is v2: over a registry
challenge, with the instance key's proof of possession; a replayed registration and one made
without the instance key are refused."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_report_data import (
    IdentityInfo,
    Role,
    prove_possession,
    report_data_for_v2,
    sign_instance_v2,
    verify_possession,
)
from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _instance_pubkey(stack: Stack) -> bytes:
    r = httpx.get(stack.identity.url + "/instance/pubkey")
    assert r.status_code == 200
    return bytes.fromhex(r.json()["pubkey"])


def _signed_body(key: Ed25519PrivateKey, role: Role, instance_pubkey: bytes) -> dict[str, str]:
    return {
        "pubkey": _raw(key).hex(),
        "signature": sign_instance_v2(key, role, instance_pubkey).hex(),
    }


def _register_operator(stack: Stack, key: Ed25519PrivateKey) -> httpx.Response:
    body = _signed_body(key, "operator", _instance_pubkey(stack))
    return httpx.post(stack.identity.url + "/operator/register", json=body, timeout=30)


def _register_owner(stack: Stack, key: Ed25519PrivateKey, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"x-token": token}
    body = _signed_body(key, "owner", _instance_pubkey(stack))
    return httpx.post(
        stack.identity.url + "/owner/register", json=body, headers=headers, timeout=30
    )


def _record(stack: Stack, instance_pubkey: bytes) -> httpx.Response:
    return httpx.get(stack.registry.url + f"/instance/{instance_pubkey.hex()}")


def _recorded_binding(record: dict[str, object], instance: bytes) -> bytes:
    """The v2 binding the record's quote must carry, recomputed from the record; checks the
    record's proof of possession over it."""
    assert record["binding_version"] == 2
    assert isinstance(record["challenge"], str) and isinstance(record["ppid"], str)
    assert isinstance(record["proof_of_possession"], str)
    challenge = bytes.fromhex(record["challenge"])
    owner = record["owner"]
    expected = report_data_for_v2(
        instance,
        bytes.fromhex(record["ppid"]),
        challenge,
        IdentityInfo.from_object(record["operator"], name="operator"),
        None if owner is None else IdentityInfo.from_object(owner, name="owner"),
    )
    verify_possession(instance, challenge, expected, bytes.fromhex(record["proof_of_possession"]))
    return expected


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
    first_challenge = record["challenge"]
    quote = parse_quote(base64.b64decode(record["attestation_quote"]), allow_zero_padding=True)
    assert quote.body.report_data == _recorded_binding(record, instance)

    r = _register_owner(stack, owner, token)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success"}

    record = _record(stack, instance).json()
    assert record["owner"]["pubkey"] == _raw(owner).hex()
    # The stored quote commits to exactly this instance, PPID, a fresh challenge, operator and
    # owner, and the instance key proved possession over them.
    assert record["challenge"] != first_challenge
    quote = parse_quote(base64.b64decode(record["attestation_quote"]), allow_zero_padding=True)
    assert quote.body.report_data == _recorded_binding(record, instance)


def test_bad_operator_signature_is_401_and_nothing_is_kept(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    instance = _instance_pubkey(stack)
    key = Ed25519PrivateKey.generate()
    body = {"pubkey": _raw(key).hex(), "signature": key.sign(b"not the instance key").hex()}
    r = httpx.post(stack.identity.url + "/operator/register", json=body)
    _assert_error(r, 401)
    # A v1 signature (the raw instance key) and a v2 owner's signature are refused as well.
    for signature in (key.sign(instance), sign_instance_v2(key, "owner", instance)):
        body = {"pubkey": _raw(key).hex(), "signature": signature.hex()}
        _assert_error(httpx.post(stack.identity.url + "/operator/register", json=body), 401)
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
    assert quote.body.report_data == _recorded_binding(after, instance)
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


def _challenge(stack: Stack) -> bytes:
    r = httpx.get(stack.registry.url + "/challenge")
    assert r.status_code == 200, r.text
    return bytes.fromhex(r.json()["nonce"])


def _sim_quote(stack: Stack, report_data: bytes) -> bytes:
    """A genuine quote of the simulated TD carrying `report_data` (RTMR3 as it stands)."""
    r = httpx.get(f"{stack.sim.url}/attest/{report_data.hex()}", timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def _body_of_record(record: dict[str, object]) -> dict[str, object]:
    """The POST /register body the registry accepted for `record` (captured from its answer)."""
    body = {k: record[k] for k in ("instance_pubkey", "ppid", "attestation_quote", "event_log")}
    body.update(operator=record["operator"], owner=record["owner"])
    body.update(challenge=record["challenge"], instance_signature=record["proof_of_possession"])
    return body


def test_a_replayed_earlier_registration_is_refused_and_changes_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    """Captured accepted registrations, posted again: their challenges are spent (401)."""
    stack = make_stack()
    instance = _instance_pubkey(stack)
    # A registration of our own, through the registry's API: a key we hold, a challenge, the
    # v2 binding, a genuine sim quote with the TD's current event log, the proof of possession.
    ours = Ed25519PrivateKey.generate()
    ours_pub = _raw(ours)
    event_log = httpx.get(stack.identity.url + "/instance/eventlog").text
    challenge = _challenge(stack)
    ppid = quote_ppid(parse_quote(_sim_quote(stack, bytes(64)), allow_zero_padding=True)).value
    report_data = report_data_for_v2(ours_pub, ppid, challenge, None, None)
    captured = {
        "instance_pubkey": ours_pub.hex(),
        "ppid": ppid.hex(),
        "attestation_quote": base64.b64encode(_sim_quote(stack, report_data)).decode(),
        "operator": None,
        "owner": None,
        "event_log": event_log,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(ours, challenge, report_data).hex(),
    }
    accepted = httpx.post(stack.registry.url + "/register", json=captured, timeout=60)
    assert accepted.status_code == 200, accepted.text
    before = _record(stack, ours_pub).json()
    replayed = httpx.post(stack.registry.url + "/register", json=captured, timeout=60)
    assert "challenge" in _assert_error(replayed, 401)
    assert _record(stack, ours_pub).json() == before

    # The identity service's own registration, as the registry's record shows it.
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    token = _register_operator(stack, operator).json()["owner_token"]
    operator_only = _record(stack, instance).json()
    assert _register_owner(stack, owner, token).status_code == 200
    current = _record(stack, instance).json()
    for earlier in (operator_only, current):
        r = httpx.post(stack.registry.url + "/register", json=_body_of_record(earlier), timeout=60)
        assert "challenge" in _assert_error(r, 401)
    assert _record(stack, instance).json() == current


def test_a_registration_without_proof_of_possession_is_refused_then_the_td_registers(
    make_stack: Callable[..., Stack],
) -> None:
    """Someone without the instance key registers it first, with a genuine quote binding it and
    a fresh challenge: refused (401), nothing recorded; the genuine service then registers."""
    stack = make_stack()
    instance = _instance_pubkey(stack)
    event_log = httpx.get(stack.identity.url + "/instance/eventlog").text
    ppid = quote_ppid(parse_quote(_sim_quote(stack, bytes(64)), allow_zero_padding=True)).value
    squatter = Ed25519PrivateKey.generate()
    for squatting in (True, False):
        challenge = _challenge(stack)
        report_data = report_data_for_v2(instance, ppid, challenge, None, None)
        body: dict[str, object] = {
            "instance_pubkey": instance.hex(),
            "ppid": ppid.hex(),
            "attestation_quote": base64.b64encode(_sim_quote(stack, report_data)).decode(),
            "operator": None,
            "owner": None,
            "event_log": event_log,
            "challenge": challenge.hex(),
        }
        if squatting:
            body["instance_signature"] = prove_possession(squatter, challenge, report_data).hex()
            reason = _assert_error(httpx.post(stack.registry.url + "/register", json=body), 401)
            assert "proof of possession" in reason
        else:
            _assert_error(httpx.post(stack.registry.url + "/register", json=body), 400)
        assert _record(stack, instance).status_code == 404
    operator = Ed25519PrivateKey.generate()
    assert _register_operator(stack, operator).status_code == 200
    record = _record(stack, instance).json()
    assert record["operator"]["pubkey"] == _raw(operator).hex()
    quote = parse_quote(base64.b64decode(record["attestation_quote"]), allow_zero_padding=True)
    assert quote.body.report_data == _recorded_binding(record, instance)
