"""`tdxctl kbs put-key` and `set-policy` against a tiny fake key broker on loopback that checks
the admin token as the broker does (verify_admin_token with the owner's public key) and
answers Trustee's error bodies; exit codes, --json, the key never printed."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from tdx_kbs_protocol import (
    AdminTokenError,
    ResourcePath,
    ResourcePathError,
    StoreKeyEnvelopeError,
    error_body,
    open_store_key,
    seal_store_key,
    store_key_path,
    verify_admin_token,
)
from tdx_service_kit.testing import free_port, serve
from tdxctl.cli import main

_names = itertools.count()
INSTANCE = bytes(range(32))


@dataclass
class Broker:
    """What the fake broker received, and how it should answer."""

    admin: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    resources: dict[str, bytes] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    lifetimes: list[int] = field(default_factory=list)
    bad_policy: bool = False
    url: str = ""


def _refuse(status: int, variant: str, detail: str) -> HTTPResponse:
    return json_response(error_body(variant, detail), status=status)


def broker_app(broker: Broker) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(f"fake-kbs-{next(_names)}")

    def admin_refusal(request: Request) -> HTTPResponse | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return _refuse(401, "AdminAuth", "no bearer token")
        try:
            claims = verify_admin_token(
                header.removeprefix("Bearer "),
                broker.admin.public_key(),
                now=int(time.time()),
            )
        except AdminTokenError as exc:
            return _refuse(401, "AdminAuth", f"admin token refused: {exc}")
        broker.lifetimes.append(claims.exp - claims.iat)
        return None

    @app.post("/kbs/v0/resource/<repo>/<kind>/<tag>")
    async def put(request: Request, repo: str, kind: str, tag: str) -> HTTPResponse:
        refusal = admin_refusal(request)
        if refusal is not None:
            return refusal
        try:
            path = ResourcePath.parse(f"{repo}/{kind}/{tag}")
        except ResourcePathError as exc:
            return _refuse(400, "InvalidRequest", str(exc))
        broker.resources[str(path)] = request.body
        return HTTPResponse(status=200)

    @app.post("/kbs/v0/resource-policy")
    async def policy(request: Request) -> HTTPResponse:
        refusal = admin_refusal(request)
        if refusal is not None:
            return refusal
        text = request.json["policy"]
        rego = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        if broker.bad_policy:
            return _refuse(400, "PolicyEngine", "rego_parse_error: unexpected token")
        broker.policies.append(rego)
        return HTTPResponse(status=200)

    return app


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    state = Broker()
    async with serve(broker_app(state)) as url:
        state.url = url
        yield state


def key_file(path: Path, key: Ed25519PrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


@pytest.fixture
def admin_file(tmp_path: Path, broker: Broker) -> Path:
    return key_file(tmp_path / "owner.pem", broker.admin)


async def run(*argv: str, env: dict[str, str] | None = None) -> int:
    """`tdxctl argv...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv), env or {})


def one_json(out: str) -> dict[str, Any]:
    lines = out.splitlines()
    assert len(lines) == 1, out
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def put_key_argv(broker: Broker, admin_file: Path, *extra: str) -> list[str]:
    return [
        "kbs",
        "put-key",
        "--kbs",
        broker.url,
        "--admin-key",
        str(admin_file),
        "--instance",
        INSTANCE.hex(),
        *extra,
    ]


def uploaded_key(broker: Broker, instance: bytes = INSTANCE) -> bytes:
    """The key in the envelope the broker received, once it verifies with the admin (owner)
    key for `instance`."""
    return open_store_key(
        broker.resources[str(store_key_path(instance))],
        owner_pubkey=broker.admin.public_key().public_bytes_raw(),
        instance_pubkey=instance,
    )


def printed_forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode().rstrip("=")]


async def test_put_key_uploads_a_new_random_key_and_never_prints_it(
    broker: Broker, admin_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(*put_key_argv(broker, admin_file), "--json") == 0
    out, err = capsys.readouterr()
    answer = one_json(out)
    path = str(store_key_path(INSTANCE))
    assert answer == {"status": "success", "resource": path, "generated": True, "kbs": broker.url}
    assert len(broker.resources[path]) == 154, "the owner's envelope, not the raw key"
    key = uploaded_key(broker)
    assert len(key) == 32
    assert not any(form in out + err for form in printed_forms(key))
    assert broker.lifetimes == [60], "a fresh admin token of 60 s"

    assert await run(*put_key_argv(broker, admin_file)) == 0
    out, err = capsys.readouterr()
    assert f"as {path} (a new random key, which exists only at the broker)" in out
    assert uploaded_key(broker) != key, "each run makes a new key"
    assert not any(form in out + err for form in printed_forms(uploaded_key(broker)))


@pytest.mark.parametrize("encoding", ["raw", "hex"])
async def test_put_key_uploads_the_key_file(
    broker: Broker,
    admin_file: Path,
    tmp_path: Path,
    encoding: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = bytes(reversed(range(32)))
    store_key = tmp_path / "store.key"
    store_key.write_bytes(key if encoding == "raw" else key.hex().encode() + b"\n")
    store_key.chmod(0o600)
    argv = put_key_argv(broker, admin_file, "--key-file", str(store_key), "--json")
    assert await run(*argv) == 0
    out, err = capsys.readouterr()
    assert one_json(out)["generated"] is False
    assert uploaded_key(broker) == key
    assert broker.resources[str(store_key_path(INSTANCE))] == seal_store_key(
        broker.admin, INSTANCE, key
    ), "ed25519 is deterministic: exactly the documented envelope"
    assert not any(form in out + err for form in printed_forms(key))


async def test_a_key_file_others_can_read_or_of_the_wrong_size_is_refused(
    broker: Broker, admin_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_key = tmp_path / "open.key"
    open_key.write_bytes(bytes(32))
    open_key.chmod(0o644)
    assert await run(*put_key_argv(broker, admin_file, "--key-file", str(open_key))) == 1
    assert "accessible by others" in capsys.readouterr().err
    short = tmp_path / "short.key"
    short.write_bytes(bytes(31))
    short.chmod(0o600)
    assert await run(*put_key_argv(broker, admin_file, "--key-file", str(short), "--json")) == 1
    assert "neither 32 raw bytes nor 64 hex digits" in one_json(capsys.readouterr().out)["error"]
    assert broker.resources == {}


async def test_another_admin_key_is_refused_with_the_variant_and_detail(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = key_file(tmp_path / "other.pem", Ed25519PrivateKey.generate())
    assert await run(*put_key_argv(broker, other)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "tdxctl: the key broker refused (401 AdminAuth): admin token refused" in err
    assert "Traceback" not in err
    assert await run(*put_key_argv(broker, other), "--json") == 1
    failure = one_json(capsys.readouterr().out)
    assert failure["status"] == 401
    assert failure["variant"] == "AdminAuth"
    assert failure["detail"].startswith("admin token refused")
    assert broker.resources == {}


async def test_the_envelope_names_the_instance_and_only_the_admin_key_opens_it(
    broker: Broker, admin_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(*put_key_argv(broker, admin_file)) == 0
    capsys.readouterr()
    envelope = broker.resources[str(store_key_path(INSTANCE))]
    with pytest.raises(StoreKeyEnvelopeError, match="another instance"):
        open_store_key(
            envelope,
            owner_pubkey=broker.admin.public_key().public_bytes_raw(),
            instance_pubkey=bytes(32),
        )
    with pytest.raises(StoreKeyEnvelopeError, match="not signed by the owner"):
        open_store_key(
            envelope,
            owner_pubkey=Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
            instance_pubkey=INSTANCE,
        )


async def test_put_key_help_says_the_admin_key_is_the_owners_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run("kbs", "put-key", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "The admin key IS the owner's key" in text
    assert "envelope signed by --admin-key for --instance" in text


async def test_set_policy_uploads_the_rego_text(
    broker: Broker, admin_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rego = "package policy\n\ndefault allow := false\n"
    policy = tmp_path / "policy.rego"
    policy.write_text(rego)
    argv = ["kbs", "set-policy", "--kbs", broker.url, "--admin-key", str(admin_file)]
    assert await run(*argv, str(policy), "--json") == 0
    assert one_json(capsys.readouterr().out) == {
        "status": "success",
        "policy": str(policy),
        "kbs": broker.url,
    }
    assert broker.policies == [rego]
    assert broker.lifetimes == [60]
    broker.bad_policy = True
    assert await run(*argv, str(policy)) == 1
    assert "(400 PolicyEngine): rego_parse_error" in capsys.readouterr().err
    assert await run(*argv, str(tmp_path / "absent.rego")) == 1
    assert "cannot read the policy" in capsys.readouterr().err


async def test_the_broker_url_and_admin_key_come_from_the_environment(
    broker: Broker, admin_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"TDXCTL_KBS_URL": broker.url, "TDXCTL_KEY": str(admin_file)}
    assert await run("kbs", "put-key", "--instance", INSTANCE.hex(), env=env) == 0
    assert str(store_key_path(INSTANCE)) in broker.resources
    capsys.readouterr()


async def test_a_broker_that_is_down_fails_with_exit_1(
    admin_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["kbs", "put-key", "--kbs", url, "--admin-key", str(admin_file)]
    assert await run(*argv, "--instance", INSTANCE.hex(), "--json") == 1
    out, err = capsys.readouterr()
    assert one_json(out)["error"].startswith(f"the key broker at {url} is unavailable")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["kbs"],
        ["kbs", "put-key", "--admin-key", "k", "--instance", "00" * 32],
        ["kbs", "put-key", "--kbs", "http://x", "--instance", "00" * 32],
        ["kbs", "put-key", "--kbs", "http://x", "--admin-key", "k"],
        ["kbs", "put-key", "--kbs", "http://x", "--admin-key", "k", "--instance", "00" * 31],
        ["kbs", "put-key", "--kbs", "ftp://x", "--admin-key", "k", "--instance", "00" * 32],
        ["kbs", "set-policy", "--kbs", "http://x", "--admin-key", "k"],
        ["kbs", "set-policy", "--admin-key", "k", "p.rego"],
    ],
)
async def test_kbs_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(*argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tdxctl")
    assert await run(*argv, "--json") == 2
    assert "error" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv", [["kbs"], ["kbs", "put-key"], ["kbs", "set-policy"]])
async def test_every_kbs_command_has_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(*argv, "--help") == 0
    assert capsys.readouterr().out.startswith("usage: tdxctl")
