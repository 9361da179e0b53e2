"""The main flow with real sim quotes and full DCAP: the owner uploads a store key and a
policy, the guest authenticates, attests and gets the key as a JWE only it can open."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_helpers import KBS, Broker, Guest, db_contains, error_variant

from tdx_kbs import default_policy_text
from tdx_kbs_protocol import (
    IdentityEvidence,
    KbsClient,
    KbsRefused,
    ResourcePath,
    TdxEvidence,
    TeeKeyPair,
    TeePublicKey,
)


async def test_store_key_released_to_its_own_instance_only(broker: Broker, tmp_path: Path) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    store_key = os.urandom(32)
    response = await broker.put(guest.store_key_path, store_key)
    assert response.status_code == 200, response.text
    tee = TeeKeyPair.generate()
    async with broker.guest_client() as client:
        attested = await guest.attest(client, tee)
        assert attested.status_code == 200, attested.text
        assert set(attested.json()) == {"token"}
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert got.status_code == 200, got.text
        assert tee.decrypt(got.json()) == store_key
        assert set(got.json()) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
        # another instance's key is refused to this one
        other = Guest(broker.sim, owner=broker.admin)
        await broker.put(other.store_key_path, os.urandom(32))
        refused = await client.get(f"{KBS}/resource/{other.store_key_path}")
        assert refused.status_code == 401
        assert error_variant(refused) == "PolicyDeny"
    db = tmp_path / "kbs.db"
    assert not db_contains(db, store_key)
    key_file = tmp_path / "storage.key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert not db_contains(db, key_file.read_bytes())


async def test_bearer_token_releases_like_the_session(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    store_key = os.urandom(32)
    assert (await broker.put(guest.store_key_path, store_key)).status_code == 200
    tee = TeeKeyPair.generate()
    async with broker.guest_client() as client:
        token = (await guest.attest(client, tee)).json()["token"]
    async with broker.guest_client() as fresh:
        got = await fresh.get(
            f"{KBS}/resource/{guest.store_key_path}", headers={"Authorization": f"Bearer {token}"}
        )
        assert got.status_code == 200, got.text
        assert tee.decrypt(got.json()) == store_key


async def test_owner_other_than_uploader_is_denied(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=Ed25519PrivateKey.generate())
    assert (await broker.put(guest.store_key_path, os.urandom(32))).status_code == 200
    async with broker.guest_client() as client:
        assert (await guest.attest(client)).status_code == 200
        refused = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert refused.status_code == 401
    assert error_variant(refused) == "PolicyDeny"


async def test_session_cookie_attributes(broker: Broker) -> None:
    response = await broker.client.post(
        f"{KBS}/auth", json={"version": "0.4.0", "tee": "tdx", "extra-params": ""}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    assert name == "kbs-session-id" and len(value) >= 32
    attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= set(attributes)
    assert attributes["path"].strip() == "Path=/kbs/v0"
    assert 1 <= int(attributes["max-age"].split("=")[1]) <= broker.settings.sessions.ttl
    body = response.json()
    assert set(body) == {"nonce", "extra-params"} and body["extra-params"] == ""


class GuestEvidence:
    """`tdx_kbs_protocol.EvidenceProvider` over a test guest: what the identity service does."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        evidence = IdentityEvidence.create(
            self.guest.instance_key, nonce, tee_pubkey, self.guest.log.to_json()
        )
        return evidence.encode()

    async def quote(self, report_data: bytes) -> TdxEvidence:
        return TdxEvidence(quote=self.guest.platform.quote(report_data), cc_eventlog=None)


async def test_kbs_client_of_the_protocol_package(broker: Broker) -> None:
    """tdx-kbs-protocol's `KbsClient` (the identity service's and tdxctl's client) against the
    broker: admin upload and policy, then one fresh session fetching the store key."""
    guest = Guest(broker.sim, owner=broker.admin)
    secret = os.urandom(32)
    client = KbsClient(broker.url)
    try:
        path = ResourcePath.parse(guest.store_key_path)
        await client.put_resource(path, secret, broker.admin_token())
        await client.set_policy(default_policy_text(), broker.admin_token())
        assert await client.get_resource(path, GuestEvidence(guest)) == secret
        other = ResourcePath.parse(Guest(broker.sim, owner=broker.admin).store_key_path)
        with pytest.raises(KbsRefused) as refused:
            await client.get_resource(other, GuestEvidence(guest))
        assert (refused.value.status, refused.value.variant) == (401, "PolicyDeny")
    finally:
        await client.aclose()


async def test_concurrent_attests_on_one_session_have_one_winner(broker: Broker) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    async with broker.guest_client() as client:
        nonce = await guest.auth(client)
        bodies = [guest.attest_body(nonce, TeeKeyPair.generate()) for _ in range(4)]
        answers = await asyncio.gather(
            *(client.post(f"{KBS}/attest", json=body) for body in bodies)
        )
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]
