"""The main flow with real sim quotes and full DCAP: the owner uploads a store key and a
policy, the guest authenticates, attests and gets the key as a JWE only it can open."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_helpers import KBS, Broker, Guest, db_contains, error_variant

from tdx_kbs_protocol import TeeKeyPair


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
