"""POST /register with an RTMR3 event log: replay against the quote, the measurement policy, the
stored log and its history, and what GET /instance shows of it (real HTTP, real SQLite)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_helpers import (
    UNISSUED,
    FakeCache,
    Instance,
    Running,
    error_of,
    helper,
    make_log,
    workload,
)

from tdx_measure import (
    EventLog,
    ExecutablePin,
    IdentityEvent,
    MeasurementPolicy,
    SshHostKeyEvent,
    ssh_ed25519_line,
)
from tdx_registry import UnsafeParseOnlyVerifier

PODMAN_BUILD_ID = bytes.fromhex("11" * 20)
RUNC_BUILD_ID = bytes.fromhex("22" * 20)


SSH_LINE = ssh_ed25519_line(bytes(range(32)))


def full_log() -> EventLog:
    """Boot, two helpers, configure and expose of one workload, two SSH host keys (the
    latest counts)."""
    return make_log(
        helper("podman", PODMAN_BUILD_ID),
        helper("oci-runtime", RUNC_BUILD_ID),
        workload("configure"),
        workload("expose"),
        SshHostKeyEvent(ssh_ed25519_line(bytes(32))),
        SshHostKeyEvent(SSH_LINE),
    )


def pinned(**extra: Any) -> MeasurementPolicy:
    """Pins podman and the OCI runtime by build ID."""
    return MeasurementPolicy(
        executables={
            "podman": ExecutablePin(build_ids=frozenset({PODMAN_BUILD_ID})),
            "oci-runtime": ExecutablePin(build_ids=frozenset({RUNC_BUILD_ID})),
        },
        **extra,
    )


async def get_record(client: Any, instance: Instance) -> dict[str, Any]:
    response = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


# ---- accepted and stored ---------------------------------------------------------------------


async def test_matching_log_is_accepted_stored_and_served(running: Running) -> None:
    instance, log = Instance(), full_log()
    async with running(measurement_policy=pinned()) as client:
        response = await client.post(
            "/register",
            json=await instance.fresh(client, Ed25519PrivateKey.generate(), event_log=log),
        )
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["event_log"] == log.to_json()
    assert EventLog.from_json(record["event_log"]) == log
    assert record["rtmr3"] == log.replay().hex()
    assert record["workload"] == {
        "transition": "expose",
        "image": "registry.example/app:1",
        "image_id": workload("expose").image_id,
        "persist_dirs": ["/data", "/srv/state"],
        "port": 8080,
    }
    assert record["event_log_history_count"] == 0


async def test_log_without_workload_shows_null_workload(running: Running) -> None:
    instance, log = Instance(), make_log(helper("podman", PODMAN_BUILD_ID))
    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client, event_log=log))
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["workload"] is None
    assert record["ssh_host_key"] is None
    assert record["event_log"] == log.to_json()


def _pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


async def test_log_naming_the_requests_identities_is_accepted(running: Running) -> None:
    instance = Instance()
    operator, owner, stray = (Ed25519PrivateKey.generate() for _ in range(3))
    log = make_log(
        IdentityEvent("operator", _pub(stray)),
        IdentityEvent("operator", _pub(operator)),
        IdentityEvent("owner", _pub(owner)),
    )
    async with running() as client:
        body = await instance.fresh(client, operator, owner, event_log=log)
        response = await client.post("/register", json=body)
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["owner"]["pubkey"] == _pub(owner).hex()


async def test_an_owner_event_without_an_owner_in_the_request_is_accepted(
    running: Running,
) -> None:
    """A refused owner registration leaves its event; the operator-only re-registration that
    follows must still pass."""
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    log = make_log(
        IdentityEvent("operator", _pub(operator)),
        IdentityEvent("owner", _pub(Ed25519PrivateKey.generate())),
    )
    async with running() as client:
        response = await client.post(
            "/register", json=await instance.fresh(client, operator, event_log=log)
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("role", ["operator", "owner"])
async def test_log_whose_latest_identity_differs_from_the_request_is_refused(
    running: Running, role: str
) -> None:
    instance = Instance()
    operator, owner, other = (Ed25519PrivateKey.generate() for _ in range(3))
    log = make_log(
        IdentityEvent("operator", _pub(operator)),
        IdentityEvent("owner", _pub(owner)),
        IdentityEvent(role, _pub(other)),  # type: ignore[arg-type]
    )
    async with running() as client:
        body = await instance.fresh(client, operator, owner, event_log=log)
        response = await client.post("/register", json=body)
        missing = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert f"the event log's latest {role} event names {_pub(other).hex()[:16]}" in error_of(
        response
    )
    assert missing.status_code == 404


async def test_non_canonical_log_text_is_stored_in_canonical_form(running: Running) -> None:
    instance, log = Instance(), full_log()
    async with running() as client:
        body = await instance.fresh(client, event_log=log)
        body["event_log"] = json.dumps(json.loads(log.to_json()), indent=2)
        response = await client.post("/register", json=body)
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["event_log"] == log.to_json()


async def test_explicit_null_log_is_the_same_as_no_log(running: Running) -> None:
    instance = Instance()
    async with running(allow_missing_event_log=True) as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), event_log=None)
        body["event_log"] = None
        response = await client.post("/register", json=body)
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["event_log"] is None


# ---- refused: the log does not replay to the quote's RTMR3 -----------------------------------


def _edit_event(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["events"][index][key] = value

    return edit


def _drop_event(index: int) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["events"].pop(index)


def _swap_events(a: int, b: int) -> Callable[[dict[str, Any]], None]:
    def swap(document: dict[str, Any]) -> None:
        events = document["events"]
        events[a], events[b] = events[b], events[a]

    return swap


TAMPERINGS = {
    "changed port of expose": _edit_event(4, "port", 8081),
    "changed image of configure": _edit_event(3, "image", "evil.example/app:1"),
    "changed helper hash": _edit_event(1, "sha384", "ab" * 48),
    "changed helper build id": _edit_event(2, "build_id", "33" * 20),
    "changed boot nonce": _edit_event(0, "boot_nonce", "00" * 32),
    "dropped expose": _drop_event(4),
    "dropped helper": _drop_event(2),
    "swapped helpers": _swap_events(1, 2),
    "changed ssh host key": _edit_event(6, "public_key", ssh_ed25519_line(b"\x07" * 32)),
    "swapped ssh host keys": _swap_events(5, 6),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
async def test_tampered_log_is_401_and_stores_nothing(
    running: Running, tamper: Callable[[dict[str, Any]], None]
) -> None:
    instance, log = Instance(), full_log()
    async with running() as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), event_log=log)
        document = json.loads(body["event_log"])
        tamper(document)
        body["event_log"] = json.dumps(document)
        response = await client.post("/register", json=body)
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert error_of(response).startswith("event log does not replay to the quote's RTMR3")
    assert stored.status_code == 404


async def test_log_of_another_quote_is_401(running: Running) -> None:
    """A genuine log paired with a quote whose RTMR3 it did not produce."""
    instance = Instance()
    async with running() as client:
        body = await instance.fresh(client, event_log=full_log(), rtmr3=full_log().replay())
        response = await client.post("/register", json=body)
    assert response.status_code == 401
    assert "does not replay to the quote's RTMR3" in error_of(response)


async def test_skip_mode_still_replays_against_the_quotes_rtmr3(running: Running) -> None:
    instance, log = Instance(), full_log()
    async with running(verifier=UnsafeParseOnlyVerifier(), skip_tdx_auth=True) as client:
        wrong = await client.post(
            "/register", json=await instance.fresh(client, event_log=log, rtmr3=b"\x01" * 48)
        )
        right = await client.post("/register", json=await instance.fresh(client, event_log=log))
        record = await get_record(client, instance)
    assert wrong.status_code == 401
    assert "does not replay to the quote's RTMR3" in error_of(wrong)
    assert right.status_code == 200, right.text
    assert record["rtmr3"] == log.replay().hex()
    assert record["verification"]["skipped"] is True


# ---- refused: the measurement policy ---------------------------------------------------------


async def test_helper_with_an_unpinned_build_is_401_naming_the_role(running: Running) -> None:
    instance = Instance()
    log = make_log(helper("podman", b"\x99" * 20), helper("oci-runtime", RUNC_BUILD_ID))
    async with running(measurement_policy=pinned()) as client:
        response = await client.post("/register", json=await instance.fresh(client, event_log=log))
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    reason = error_of(response)
    assert reason.startswith("event log refused by the measurement policy")
    assert "podman /usr/bin/podman" in reason and "99" * 20 in reason
    assert stored.status_code == 404


async def test_helper_role_not_on_the_pin_list_is_401(running: Running) -> None:
    log = make_log(
        helper("podman", PODMAN_BUILD_ID),
        helper("oci-runtime", RUNC_BUILD_ID),
        helper("gocryptfs", b"\x44" * 20),
    )
    async with running(measurement_policy=pinned()) as client:
        response = await client.post(
            "/register", json=await Instance().fresh(client, event_log=log)
        )
    assert response.status_code == 401
    assert "gocryptfs" in error_of(response)
    assert "not allowed by the policy" in error_of(response)


async def test_pinned_helper_missing_from_the_log_is_401(running: Running) -> None:
    log = make_log(helper("podman", PODMAN_BUILD_ID))
    async with running(measurement_policy=pinned()) as client:
        response = await client.post(
            "/register", json=await Instance().fresh(client, event_log=log)
        )
    assert response.status_code == 401
    assert "oci-runtime" in error_of(response)


async def test_helper_pinned_by_file_hash_is_accepted(running: Running) -> None:
    podman = helper("podman", None, content=b"podman without build id")
    policy = MeasurementPolicy(
        executables={"podman": ExecutablePin(sha384s=frozenset({podman.sha384}))}
    )
    async with running(measurement_policy=policy) as client:
        response = await client.post(
            "/register", json=await Instance().fresh(client, event_log=make_log(podman))
        )
    assert response.status_code == 200, response.text


async def test_image_not_allowed_is_401_naming_the_image(running: Running) -> None:
    instance = Instance()
    log = make_log(
        helper("podman", PODMAN_BUILD_ID),
        helper("oci-runtime", RUNC_BUILD_ID),
        workload("configure", "evil.example/miner:latest"),
    )
    policy = pinned(allowed_images=frozenset({"registry.example/app:1"}))
    async with running(measurement_policy=policy) as client:
        refused = await client.post("/register", json=await instance.fresh(client, event_log=log))
        allowed = await client.post(
            "/register", json=await Instance().fresh(client, event_log=full_log())
        )
    assert refused.status_code == 401
    assert "image evil.example/miner:latest: is not an allowed image" in error_of(refused)
    assert allowed.status_code == 200, allowed.text


# ---- absent log ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"measurement_policy": pinned()},
        {"measurement_policy": MeasurementPolicy(allowed_images=frozenset({"a"}))},
        {},
    ],
    ids=["pinned helpers", "allowed images", "by default"],
)
async def test_absent_log_is_refused_by_default_and_whenever_the_policy_needs_one(
    running: Running, cache: FakeCache, overrides: dict[str, Any]
) -> None:
    instance = Instance()
    allow = {"allow_missing_event_log": bool(overrides)}
    async with running(**overrides, **allow) as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), event_log=None)
        response = await client.post("/register", json=body)
        stored = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 401
    assert error_of(response).startswith("event log required")
    assert stored.status_code == 404
    assert cache.calls == 0


async def test_absent_log_is_accepted_with_allow_missing_event_log_and_no_policy(
    running: Running,
) -> None:
    instance = Instance()
    async with running(allow_missing_event_log=True) as client:
        body = await instance.fresh(client, Ed25519PrivateKey.generate(), event_log=None)
        response = await client.post("/register", json=body)
        record = await get_record(client, instance)
    assert response.status_code == 200, response.text
    assert record["event_log"] is None
    assert record["workload"] is None
    assert record["rtmr3"] == "00" * 48
    assert record["event_log_history_count"] == 0


# ---- malformed -------------------------------------------------------------------------------


def _log_text(**changes: Any) -> str:
    document = json.loads(full_log().to_json())
    document.update(changes)
    return json.dumps(document)


MALFORMED = {
    "an object": ({"events": []}, "'event_log' must be the event log's JSON text"),
    "a number": (5, "'event_log' must be the event log's JSON text"),
    "not JSON": ("{not json", "'event_log' is not a valid event log"),
    "no boot event": (_log_text(events=[]), "must start with a boot event"),
    "unknown format": (_log_text(format="v0"), "unknown event log format"),
    "extra key": (_log_text(extra=1), "exactly the keys"),
    "unknown event type": (
        _log_text(
            events=[{"type": "boot", "boot_nonce": "00" * 32, "timestamp": 1}, {"type": "x"}]
        ),
        "event 1: unknown event type",
    ),
    "uppercase hex": (
        _log_text(events=[{"type": "boot", "boot_nonce": "AB" * 32, "timestamp": 1}]),
        "boot_nonce",
    ),
}


@pytest.mark.parametrize(("value", "fragment"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_log_is_400_naming_the_problem(
    running: Running, cache: FakeCache, value: Any, fragment: str
) -> None:
    body = Instance().body(Ed25519PrivateKey.generate(), challenge=UNISSUED)
    body["event_log"] = value
    async with running() as client:
        response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert fragment in error_of(response)
    assert cache.calls == 0


# ---- history ---------------------------------------------------------------------------------


async def test_history_is_kept_across_re_registrations(running: Running) -> None:
    instance, operator, owner = (
        Instance(),
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    nonce = b"\x07" * 32
    booted = make_log(helper("podman", PODMAN_BUILD_ID), boot_nonce=nonce)
    configured = make_log(
        helper("podman", PODMAN_BUILD_ID), workload("configure"), boot_nonce=nonce
    )
    exposed = make_log(
        helper("podman", PODMAN_BUILD_ID),
        workload("configure"),
        workload("expose"),
        boot_nonce=nonce,
    )
    rebooted = make_log(
        helper("podman", PODMAN_BUILD_ID), workload("configure"), workload("expose")
    )
    counts = []
    async with running() as client:
        for identities, log in (
            ((operator,), booted),
            ((operator, owner), booted),  # same log again: no history
            ((operator, owner), configured),
            ((operator, owner), exposed),
            ((operator, owner), rebooted),
        ):
            body = await instance.fresh(client, *identities, event_log=log)
            response = await client.post("/register", json=body)
            assert response.status_code == 200, response.text
            counts.append((await get_record(client, instance))["event_log_history_count"])
        record = await get_record(client, instance)
        refused = await client.post(
            "/register",
            json=await instance.fresh(client, operator, owner, event_log=exposed, rtmr3=bytes(48)),
        )
        after_refusal = await get_record(client, instance)
    assert counts == [0, 0, 1, 2, 3]
    assert record["event_log"] == rebooted.to_json()
    assert record["rtmr3"] == rebooted.replay().hex()
    assert refused.status_code == 401
    assert after_refusal == record


async def test_get_serves_the_workload_stored_at_registration_without_parsing_the_log(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, log = Instance(), full_log()

    def parsing_refused(*args: object, **kwargs: object) -> EventLog:
        raise AssertionError("GET /instance parsed the event log")

    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client, event_log=log))
        assert response.status_code == 200, response.text
        monkeypatch.setattr(EventLog, "from_json", parsing_refused)
        record = await get_record(client, instance)
    assert record["event_log"] == log.to_json()
    assert record["workload"] is not None and record["workload"]["transition"] == "expose"
    assert record["ssh_host_key"] == SSH_LINE


async def test_record_stored_before_the_ssh_host_key_column_shows_its_logs_key(
    running: Running, tmp_path: Path
) -> None:
    instance, log = Instance(), full_log()
    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client, event_log=log))
        assert response.status_code == 200, response.text
        stored = await get_record(client, instance)
    with sqlite3.connect(tmp_path / "registry.db") as conn:
        conn.execute("UPDATE instances SET ssh_host_key = NULL")
    async with running() as client:
        legacy = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert legacy.status_code == 200
    assert stored["ssh_host_key"] == SSH_LINE
    assert legacy.json() == stored


async def test_record_stored_before_the_workload_column_shows_its_logs_workload(
    running: Running, tmp_path: Path
) -> None:
    instance, log = Instance(), full_log()
    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client, event_log=log))
        assert response.status_code == 200, response.text
        stored = await get_record(client, instance)
    with sqlite3.connect(tmp_path / "registry.db") as conn:
        conn.execute("UPDATE instances SET workload = NULL")
    async with running() as client:
        legacy = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert legacy.status_code == 200
    assert legacy.json() == stored


@pytest.mark.parametrize(
    "tampering",
    [
        "UPDATE instances SET workload = '{}'",
        "UPDATE instances SET workload = NULL, event_log = '{}'",
        "UPDATE instances SET ssh_host_key = '\"ssh-ed25519 AAAA\"'",
        "UPDATE instances SET ssh_host_key = '[1]'",
    ],
    ids=[
        "stored-workload",
        "log-of-a-row-without-workload",
        "stored-ssh-host-key",
        "stored-ssh-host-key-not-text",
    ],
)
async def test_stored_workload_that_no_longer_decodes_is_a_store_failure(
    running: Running, tmp_path: Path, tampering: str
) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post(
            "/register", json=await instance.fresh(client, event_log=full_log())
        )
        assert response.status_code == 200, response.text
        with sqlite3.connect(tmp_path / "registry.db") as conn:
            conn.execute(tampering)
        fetched = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert fetched.status_code == 503
    assert "record store is unavailable" in error_of(fetched)


async def test_a_replayed_earlier_registration_of_the_same_boot_is_403_and_changes_nothing(
    running: Running,
) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    nonce = b"\x42" * 32
    configured = make_log(helper("podman"), workload("configure"), boot_nonce=nonce)
    exposed = make_log(
        helper("podman"), workload("configure"), workload("expose"), boot_nonce=nonce
    )
    async with running() as client:
        for log in (configured, exposed):
            response = await client.post(
                "/register", json=await instance.fresh(client, operator, event_log=log)
            )
            assert response.status_code == 200, response.text
        before = await get_record(client, instance)
        replayed = await client.post(
            "/register", json=await instance.fresh(client, operator, event_log=configured)
        )
        after = await get_record(client, instance)
    assert replayed.status_code == 403
    assert "the lifecycle only moves forward" in error_of(replayed)
    assert after == before


async def test_an_unverified_registration_over_a_verified_record_is_403(
    running: Running,
) -> None:
    instance, log = Instance(), full_log()
    operator = Ed25519PrivateKey.generate()
    async with running() as client:
        body = await instance.fresh(client, operator, event_log=log)
        assert (await client.post("/register", json=body)).status_code == 200
        before = await get_record(client, instance)
    async with running(verifier=UnsafeParseOnlyVerifier(), skip_tdx_auth=True) as client:
        refused = await client.post(
            "/register", json=await instance.fresh(client, operator, event_log=log)
        )
        after = await get_record(client, instance)
    assert refused.status_code == 403
    assert "an unverified registration" in error_of(refused)
    assert after == before
