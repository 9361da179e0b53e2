"""The workload routes' authentication, validation and ordering, against a fake runtime."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from conftest import AGREED, Running, instance_pubkey, register_operator, register_owner, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeWorkload

from tdx_identity import Settings
from tdx_identity.core.state import STATE_FILE_NAME
from tdx_identity.workload.unavailable import NotConfiguredWorkload

IMAGE = "localhost/busybox-site:1"


class Owner:
    """A registered owner talking to one running instance."""

    def __init__(self, client: httpx.AsyncClient, key: Ed25519PrivateKey, instance: bytes):
        self.client, self.key, self.instance = client, key, instance
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def post(
        self, path: str, body: dict[str, Any], *, key: Ed25519PrivateKey | None = None
    ) -> httpx.Response:
        raw = json.dumps(body).encode()
        signature = sign(key or self.key, raw)
        return await self.client.post(path, content=raw, headers={"x-signature": signature})

    def configure_body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": "configure",
            "seq": self.next_seq(),
            "instance_pubkey": self.instance.hex(),
            "image": IMAGE,
            "persist_dirs": ["/data", "/srv/www"],
            "port": 8000,
        }
        body.update(changes)
        return body

    def expose_body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": "expose",
            "seq": self.next_seq(),
            "instance_pubkey": self.instance.hex(),
            "image": IMAGE,
        }
        body.update(changes)
        return body


@pytest.fixture
async def owner(running: Running) -> AsyncIterator[Owner]:
    key = Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        assert (await register_owner(client, key, token["owner_token"])).status_code == 200
        yield Owner(client, key, await instance_pubkey(client))


async def test_configure_then_expose_calls_the_runtime_and_moves_the_lifecycle(
    owner: Owner, workload: FakeWorkload, settings: Settings
) -> None:
    response = await owner.post("/workload/configure", owner.configure_body())
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    [config] = workload.configured
    assert (config.image, config.persist_dirs, config.port) == (IMAGE, ("/data", "/srv/www"), 8000)
    assert workload.configured_for == [owner.key.public_key().public_bytes_raw()]
    assert (await owner.client.get("/instance/state")).json() == {
        "state": "configured",
        "last_seq": 1,
        "registry_comparison": AGREED,
        "workload": "running",
        "workload_reason": None,
        "front": "stopped",
        "tls_spki_sha256": ANY,
    }

    assert (await owner.post("/workload/expose", owner.expose_body())).status_code == 200
    assert workload.exposed == [IMAGE]
    assert (await owner.client.get("/instance/state")).json() == {
        "state": "exposed",
        "last_seq": 2,
        "registry_comparison": AGREED,
        "workload": "running",
        "workload_reason": None,
        "front": "stopped",
        "tls_spki_sha256": ANY,
    }
    stored = json.loads((settings.storage_path / STATE_FILE_NAME).read_text())
    assert stored["lifecycle"] == "exposed"
    assert stored["last_seq"] == 2
    assert stored["workload_config"]["image"] == IMAGE


async def test_configure_twice_before_expose_reconfigures(
    owner: Owner, workload: FakeWorkload
) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body())).status_code == 200
    body = owner.configure_body(port=9000, persist_dirs=[])
    assert (await owner.post("/workload/configure", body)).status_code == 200
    assert [c.port for c in workload.configured] == [8000, 9000]


async def test_workload_steps_without_an_owner_are_401(
    running: Running, workload: FakeWorkload
) -> None:
    key = Ed25519PrivateKey.generate()
    async with running() as client:
        instance = await instance_pubkey(client)
        anyone = Owner(client, key, instance)
        for _ in range(2):
            configure = await anyone.post("/workload/configure", anyone.configure_body())
            assert configure.status_code == 401
            expose = await anyone.post("/workload/expose", anyone.expose_body())
            assert expose.status_code == 401
            await register_operator(client, Ed25519PrivateKey.generate())
    assert workload.configured == [] and workload.exposed == []


async def test_signatures_that_do_not_check_out_are_401(
    owner: Owner, workload: FakeWorkload
) -> None:
    raw = json.dumps(owner.configure_body()).encode()
    cases: list[dict[str, str]] = [
        {},
        {"x-signature": ""},
        {"x-signature": "zz" * 64},
        {"x-signature": "00" * 63},
        {"x-signature": "00" * 64},
        {"x-signature": sign(Ed25519PrivateKey.generate(), raw)},
        {"x-signature": sign(owner.key, raw + b" ")},
    ]
    for headers in cases:
        response = await owner.client.post("/workload/configure", content=raw, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]
    assert workload.configured == []


async def test_signature_covers_the_exact_body_bytes(owner: Owner) -> None:
    raw = json.dumps(owner.configure_body()).encode()
    reformatted = json.dumps(owner.configure_body(), indent=1).encode()
    response = await owner.client.post(
        "/workload/configure", content=reformatted, headers={"x-signature": sign(owner.key, raw)}
    )
    assert response.status_code == 401


async def test_another_instance_pubkey_is_401(owner: Owner) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    assert (
        await owner.post("/workload/configure", owner.configure_body(instance_pubkey=other))
    ).status_code == 401


@pytest.mark.parametrize(
    "path",
    ["data", "", "/", "/data/", "/a/../b", "/a/./b", "/a//b", "/..", "/a/..", "/a\x00b", "./x"],
)
async def test_unclean_persist_dir_is_400_invalid_directory_path(
    owner: Owner, workload: FakeWorkload, path: str
) -> None:
    response = await owner.post(
        "/workload/configure", owner.configure_body(persist_dirs=["/ok", path])
    )
    assert response.status_code == 400
    assert "Invalid directory path" in response.json()["error"]
    assert workload.configured == []


@pytest.mark.parametrize(
    "changes",
    [
        {"port": 0},
        {"port": -1},
        {"port": 70000},
        {"port": "8080"},
        {"port": True},
        {"port": 80.0},
        {"image": ""},
        {"image": "--privileged"},
        {"image": "busybox latest"},
        {"image": "busybox\n"},
        {"image": 7},
        {"persist_dirs": "/data"},
        {"persist_dirs": [1]},
        {"instance_pubkey": "xyz"},
    ],
)
async def test_bad_configure_body_is_400(
    owner: Owner, workload: FakeWorkload, changes: dict[str, Any]
) -> None:
    response = await owner.post("/workload/configure", owner.configure_body(**changes))
    assert response.status_code == 400, response.text
    assert workload.configured == []


@pytest.mark.parametrize("missing", ["instance_pubkey", "image", "persist_dirs", "port"])
async def test_missing_configure_field_is_400(owner: Owner, missing: str) -> None:
    body = owner.configure_body()
    del body[missing]
    assert (await owner.post("/workload/configure", body)).status_code == 400


async def test_signed_body_that_is_not_json_is_400(owner: Owner) -> None:
    raw = b"not json"
    response = await owner.client.post(
        "/workload/configure", content=raw, headers={"x-signature": sign(owner.key, raw)}
    )
    assert response.status_code == 400


async def test_expose_before_configure_is_400(owner: Owner, workload: FakeWorkload) -> None:
    assert (await owner.post("/workload/expose", owner.expose_body())).status_code == 400
    assert workload.exposed == []


async def test_expose_with_another_image_is_401(owner: Owner, workload: FakeWorkload) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body())).status_code == 200
    response = await owner.post("/workload/expose", owner.expose_body(image="localhost/other:1"))
    assert response.status_code == 401
    assert workload.exposed == []


async def test_after_expose_configure_and_expose_are_400(
    owner: Owner, workload: FakeWorkload
) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body())).status_code == 200
    assert (await owner.post("/workload/expose", owner.expose_body())).status_code == 200
    assert (await owner.post("/workload/expose", owner.expose_body())).status_code == 400
    assert (await owner.post("/workload/configure", owner.configure_body())).status_code == 400
    assert len(workload.configured) == 1 and len(workload.exposed) == 1


async def test_without_a_runtime_the_workload_routes_answer_503_and_keep_the_state(
    running: Running, settings: Settings
) -> None:
    key = Ed25519PrivateKey.generate()
    async with running(workload=NotConfiguredWorkload()) as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, key, token["owner_token"])
        the_owner = Owner(client, key, await instance_pubkey(client))
        before = (settings.storage_path / STATE_FILE_NAME).read_bytes()
        response = await the_owner.post("/workload/configure", the_owner.configure_body())
        assert response.status_code == 503
        assert response.json() == {"error": "workload runtime not available"}
        assert (settings.storage_path / STATE_FILE_NAME).read_bytes() == before


async def test_runtime_is_recovered_at_start_and_shut_down_at_stop(
    running: Running, workload: FakeWorkload
) -> None:
    async with running():
        assert len(workload.recovered) == 1
        assert workload.shutdowns == 0
    assert workload.shutdowns == 1


def state_bytes(settings: Settings) -> bytes:
    return (settings.storage_path / STATE_FILE_NAME).read_bytes()


async def last_seq(owner: Owner) -> int:
    value: int = (await owner.client.get("/instance/state")).json()["last_seq"]
    return value


async def test_a_replayed_configure_is_401_stale_and_leaves_the_state_file_unchanged(
    owner: Owner, workload: FakeWorkload, settings: Settings
) -> None:
    raw = json.dumps(owner.configure_body()).encode()
    headers = {"x-signature": sign(owner.key, raw)}
    assert (await owner.client.post("/workload/configure", content=raw, headers=headers)).is_success
    before = state_bytes(settings)
    replay = await owner.client.post("/workload/configure", content=raw, headers=headers)
    assert replay.status_code == 401
    assert "stale request" in replay.json()["error"]
    assert state_bytes(settings) == before
    assert len(workload.configured) == 1
    assert await last_seq(owner) == 1


async def test_a_seq_not_greater_than_the_last_is_401_stale_and_changes_nothing(
    owner: Owner, workload: FakeWorkload, settings: Settings
) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body(seq=5))).is_success
    assert await last_seq(owner) == 5
    before = state_bytes(settings)
    for seq in (5, 4, 1):
        for response in (
            await owner.post("/workload/configure", owner.configure_body(seq=seq, port=9000)),
            await owner.post("/workload/expose", owner.expose_body(seq=seq)),
        ):
            assert response.status_code == 401, seq
            assert "stale request" in response.json()["error"]
            assert state_bytes(settings) == before
    assert [c.port for c in workload.configured] == [8000] and workload.exposed == []
    assert (await owner.post("/workload/expose", owner.expose_body(seq=6))).is_success
    assert await last_seq(owner) == 6


async def test_seqs_may_skip_but_must_grow(owner: Owner) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body(seq=10))).is_success
    assert (await owner.post("/workload/configure", owner.configure_body(seq=2**53 - 1))).is_success
    assert await last_seq(owner) == 2**53 - 1
    refused = await owner.post("/workload/expose", owner.expose_body(seq=2**53 - 1))
    assert refused.status_code == 401


@pytest.mark.parametrize("seq", [0, -1, 2**53, True, False, 1.5, 1.0, "1", None, [1], {"n": 1}])
async def test_a_seq_out_of_range_or_not_an_integer_is_400(
    owner: Owner, workload: FakeWorkload, settings: Settings, seq: object
) -> None:
    before = state_bytes(settings)
    for path, body in (
        ("/workload/configure", owner.configure_body(seq=seq)),
        ("/workload/expose", owner.expose_body(seq=seq)),
    ):
        response = await owner.post(path, body)
        assert response.status_code == 400, (path, seq)
        assert "seq" in response.json()["error"]
    assert state_bytes(settings) == before
    assert workload.configured == []


async def test_a_body_without_seq_or_action_is_400(
    owner: Owner, workload: FakeWorkload, settings: Settings
) -> None:
    before = state_bytes(settings)
    for missing in ("seq", "action"):
        for path, body in (
            ("/workload/configure", owner.configure_body()),
            ("/workload/expose", owner.expose_body()),
        ):
            del body[missing]
            response = await owner.post(path, body)
            assert response.status_code == 400
            assert response.json()["error"] == f"missing field: {missing}"
    assert state_bytes(settings) == before
    assert workload.configured == []


async def test_a_configure_body_posted_to_expose_is_400_and_changes_nothing(
    owner: Owner, workload: FakeWorkload, settings: Settings
) -> None:
    assert (await owner.post("/workload/configure", owner.configure_body())).is_success
    before = state_bytes(settings)
    captured = owner.configure_body()
    response = await owner.post("/workload/expose", captured)
    assert response.status_code == 400
    assert "unknown field" in response.json()["error"]
    # Even reduced to expose's fields, a body that names configure is not an expose.
    reduced = {k: v for k, v in captured.items() if k not in ("persist_dirs", "port")}
    response = await owner.post("/workload/expose", reduced)
    assert response.status_code == 400
    assert "action must be 'expose'" in response.json()["error"]
    assert state_bytes(settings) == before
    assert workload.exposed == []
    assert (await owner.client.get("/instance/state")).json()["state"] == "configured"


@pytest.mark.parametrize("action", ["expose", "Configure", "", None, 1])
async def test_a_configure_body_naming_another_action_is_400(
    owner: Owner, workload: FakeWorkload, action: object
) -> None:
    response = await owner.post("/workload/configure", owner.configure_body(action=action))
    assert response.status_code == 400
    assert "action must be 'configure'" in response.json()["error"]
    assert workload.configured == []


@pytest.mark.parametrize(
    "extra", [{"nonce": "00"}, {"ssh": True}, {"Seq": 1}, {"owner_pubkey": "ab" * 32}]
)
async def test_an_unknown_field_is_400(
    owner: Owner, workload: FakeWorkload, settings: Settings, extra: dict[str, object]
) -> None:
    before = state_bytes(settings)
    for path, body in (
        ("/workload/configure", owner.configure_body() | extra),
        ("/workload/expose", owner.expose_body() | extra),
    ):
        response = await owner.post(path, body)
        assert response.status_code == 400
        assert "unknown field" in response.json()["error"]
    assert state_bytes(settings) == before
    assert workload.configured == []


@pytest.fixture
def unsequenced(settings: Settings) -> Settings:
    return replace(settings, accept_unsequenced_requests=True)


async def test_with_accept_unsequenced_requests_a_v1_body_is_served_with_a_warning(
    running: Running,
    workload: FakeWorkload,
    unsequenced: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = Ed25519PrivateKey.generate()
    caplog.set_level(logging.WARNING, logger="tdx_identity")
    async with running(settings=unsequenced) as client:
        assert any("accepting unsequenced" in r.getMessage() for r in caplog.records)
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, key, token["owner_token"])
        the_owner = Owner(client, key, await instance_pubkey(client))
        v1_configure = the_owner.configure_body()
        del v1_configure["seq"], v1_configure["action"]
        caplog.clear()
        assert (await the_owner.post("/workload/configure", v1_configure)).is_success
        warned = [r for r in caplog.records if "unsequenced owner request" in r.getMessage()]
        assert len(warned) == 1
        assert (await client.get("/instance/state")).json() == {
            "state": "configured",
            "last_seq": 0,
            "registry_comparison": AGREED,
            "workload": "running",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
        # A sequenced body still has to be fresh, and sets last_seq.
        assert (
            await the_owner.post("/workload/configure", the_owner.configure_body(seq=3))
        ).is_success
        stale = await the_owner.post("/workload/configure", the_owner.configure_body(seq=3))
        assert stale.status_code == 401
        # Still one set of fields per route, and the action, when given, must be the route's.
        wrong = await the_owner.post("/workload/expose", the_owner.expose_body(action="configure"))
        assert wrong.status_code == 400
        v1_expose = the_owner.expose_body()
        del v1_expose["seq"], v1_expose["action"]
        assert (
            await the_owner.post("/workload/expose", v1_expose | {"port": 1})
        ).status_code == 400
        caplog.clear()
        assert (await the_owner.post("/workload/expose", v1_expose)).is_success
        assert len([r for r in caplog.records if "unsequenced owner" in r.getMessage()]) == 1
        assert (await client.get("/instance/state")).json() == {
            "state": "exposed",
            "last_seq": 3,
            "registry_comparison": AGREED,
            "workload": "running",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
    assert workload.exposed == [IMAGE]


async def test_last_seq_survives_a_restart(running: Running, settings: Settings) -> None:
    key = Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, key, token["owner_token"])
        the_owner = Owner(client, key, await instance_pubkey(client))
        raw = json.dumps(the_owner.configure_body(seq=7)).encode()
        headers = {"x-signature": sign(key, raw)}
        assert (await client.post("/workload/configure", content=raw, headers=headers)).is_success
    before = state_bytes(settings)
    async with running() as client:
        assert (await client.get("/instance/state")).json()["last_seq"] == 7
        replay = await client.post("/workload/configure", content=raw, headers=headers)
        assert replay.status_code == 401
        assert "stale request" in replay.json()["error"]
    assert state_bytes(settings) == before


async def test_the_same_body_sent_twice_at_once_is_served_once(
    owner: Owner, workload: FakeWorkload
) -> None:
    raw = json.dumps(owner.configure_body()).encode()
    headers = {"x-signature": sign(owner.key, raw)}
    responses = await asyncio.gather(
        *(owner.client.post("/workload/configure", content=raw, headers=headers) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401]
    assert len(workload.configured) == 1


async def test_configures_past_the_event_log_budget_are_409_and_change_nothing(
    owner: Owner, workload: FakeWorkload
) -> None:
    # The review's replay: configure after configure until the log reaches its budget.
    accepted = 0
    while True:
        response = await owner.post("/workload/configure", owner.configure_body())
        if response.status_code != 200:
            break
        accepted += 1
        assert accepted < 1000
    assert response.status_code == 409
    assert "reboot the TD to start a new log" in response.json()["error"]
    assert 100 <= accepted <= 250
    # Refused before the runtime was touched: nothing configured, and the state still serves.
    assert len(workload.configured) == accepted
    state = (await owner.client.get("/instance/state")).json()
    assert state["state"] == "configured"
    log = (await owner.client.get("/instance/eventlog")).json()
    assert len(json.dumps(log)) < 64 * 1024
