"""register_owner and `tdxctl owner register` against the TD's identity routes answering with
fresh sim quotes, verified with the caller's root: the owner signs and sends its token only for
an instance whose fresh attestation verifies and names an operator (the expected one, when
given), and succeeds only when another fresh attestation then names it as owner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sanic import Request
from sanic.response import HTTPResponse
from sanic.response import json as json_response
from tdxctl_support import PODMAN, SimTd, identity_app, raw

from tdx_measure import IdentityEvent
from tdx_service_kit.testing import serve
from tdxctl import (
    ExpectationFailed,
    IdentityClient,
    QuoteRejected,
    QuoteVerifier,
    TrustSettings,
    register_owner,
)
from tdxctl.cli import main

OPERATOR = Ed25519PrivateKey.generate()
OWNER = Ed25519PrivateKey.generate()
TOKEN = "the-operators-single-use-token"


@dataclass
class OwnerRoute:
    """POST /owner/register as the identity service answers it, or as a lying one does:
    `measure` extends into the TD's RTMR3 what it measures for a body's key (the service: an
    owner event naming that key)."""

    td: SimTd
    measure: Callable[[SimTd, bytes], None] = lambda td, pubkey: td.append(
        IdentityEvent(role="owner", pubkey=pubkey)
    )
    posted: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> HTTPResponse:
        body = json.loads(request.body)
        self.posted.append({"token": request.headers.get("x-token"), **body})
        if request.headers.get("x-token") != TOKEN:
            return json_response({"error": "bad token"}, status=401)
        self.measure(self.td, bytes.fromhex(body["pubkey"]))
        return json_response({"status": "success"})


@pytest.fixture
def route(td: SimTd) -> OwnerRoute:
    td.append(PODMAN)
    td.register("operator", OPERATOR)
    return OwnerRoute(td)


@asynccontextmanager
async def identity(td: SimTd, route: OwnerRoute) -> AsyncIterator[IdentityClient]:
    app = identity_app(td)
    app.add_route(route.handle, "/owner/register", methods=["POST"], name="owner_register")
    async with serve(app) as url, IdentityClient(url) as client:
        yield client


async def test_the_owner_registers_after_a_fresh_attestation_and_is_measured(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier
) -> None:
    async with identity(td, route) as client:
        done = await register_owner(client, OWNER, TOKEN, verifier, expect_operator=raw(OPERATOR))
    assert (done.before.operator, done.before.owner) == (raw(OPERATOR), None)
    assert (done.after.operator, done.after.owner) == (raw(OPERATOR), raw(OWNER))
    assert done.before.nonce != done.after.nonce
    assert done.after.instance_pubkey == td.pubkey
    assert [(p["token"], p["pubkey"]) for p in route.posted] == [(TOKEN, raw(OWNER).hex())]


async def refused(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier, **kwargs: Any
) -> pytest.ExceptionInfo[Exception]:
    async with identity(td, route) as client:
        with pytest.raises(Exception) as refusal:
            await register_owner(client, OWNER, TOKEN, verifier, **kwargs)
    return refusal


async def test_an_instance_whose_attestation_names_no_operator_gets_no_token(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.append(PODMAN)
    route = OwnerRoute(td)
    refusal = await refused(td, route, verifier)
    assert refusal.type is ExpectationFailed
    assert str(refusal.value) == (
        "the instance's fresh attestation names no operator: the operator registers first"
    )
    assert route.posted == []


async def test_an_instance_under_another_operator_than_expected_gets_no_token(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier
) -> None:
    other = raw(Ed25519PrivateKey.generate())
    refusal = await refused(td, route, verifier, expect_operator=other)
    assert refusal.type is ExpectationFailed
    assert str(refusal.value) == (
        "the instance's fresh attestation does not name the expected operator"
    )
    assert route.posted == []


async def test_a_quote_from_an_untrusted_root_gets_no_token(
    tmp_path: Path, td: SimTd, route: OwnerRoute, trust: TrustSettings
) -> None:
    """Another sim's root CA: the instance's quote does not chain to it."""
    other_root = SimTd(tmp_path / "other-sim").platform.root_ca_pem
    assert other_root != td.platform.root_ca_pem
    untrusted = TrustSettings(root_ca_pem=other_root, pccs_url=trust.pccs_url)
    async with QuoteVerifier(untrusted) as verifier:
        refusal = await refused(td, route, verifier)
    assert isinstance(refusal.value, QuoteRejected)
    assert route.posted == []


async def test_a_service_that_accepts_without_measuring_the_owner_fails(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier
) -> None:
    route.measure = lambda td, pubkey: None
    refusal = await refused(td, route, verifier)
    assert refusal.type is ExpectationFailed
    assert str(refusal.value) == (
        "the registration was answered, but the instance's fresh attestation does not name "
        "this owner"
    )
    assert len(route.posted) == 1


async def test_a_service_that_measures_another_owner_fails(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier
) -> None:
    stranger = raw(Ed25519PrivateKey.generate())
    route.measure = lambda td, pubkey: td.append(IdentityEvent(role="owner", pubkey=stranger))
    refusal = await refused(td, route, verifier)
    assert refusal.type is ExpectationFailed
    assert "does not name this owner" in str(refusal.value)


async def test_a_service_that_measures_another_operator_fails(
    td: SimTd, route: OwnerRoute, verifier: QuoteVerifier
) -> None:
    """The owner is measured, but so is another operator after it (the latest one counts)."""
    other = raw(Ed25519PrivateKey.generate())

    def owner_then_operator(td: SimTd, pubkey: bytes) -> None:
        td.append(IdentityEvent(role="owner", pubkey=pubkey))
        td.append(IdentityEvent(role="operator", pubkey=other))

    route.measure = owner_then_operator
    refusal = await refused(td, route, verifier)
    assert refusal.type is ExpectationFailed
    assert str(refusal.value) == (
        "the instance's fresh attestation after the registration names another operator"
    )


async def test_the_cli_prints_the_attestation_that_names_the_owner(
    tmp_path: Path, td: SimTd, route: OwnerRoute, sim_url: str
) -> None:
    key = tmp_path / "owner.pem"
    key.write_bytes(
        OWNER.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(stat.S_IRUSR | stat.S_IWUSR)
    root = tmp_path / "root.pem"
    root.write_bytes(td.platform.root_ca_pem)
    out = tmp_path / "out.json"
    app = identity_app(td)
    app.add_route(route.handle, "/owner/register", methods=["POST"], name="owner_register")
    async with serve(app) as url:
        argv = [
            "owner", "register", "--identity", url, "--key", str(key), "--token", TOKEN,
            "--trusted-root-ca", str(root), "--pccs-url", sim_url,
            "--expect-operator", raw(OPERATOR).hex(), "--json",
        ]  # fmt: skip
        code = await asyncio.to_thread(_main_to_file, argv, out)
    assert code == 0
    shown = json.loads(out.read_text())
    assert shown["status"] == "success"
    assert shown["instance_pubkey"] == td.pubkey.hex()
    assert shown["owner"] == raw(OWNER).hex()
    assert shown["attestation"]["owner"] == raw(OWNER).hex()
    assert shown["attestation"]["operator"] == raw(OPERATOR).hex()


def _main_to_file(argv: list[str], out: Path) -> int:
    with out.open("w") as stream, contextlib.redirect_stdout(stream):
        return main(argv, {})
