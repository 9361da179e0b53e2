"""The SSH setup port under idle unauthenticated connections, as the review reproduced it:
eight idle TCP connections (and more) must not lock the owner out.

Sessions run `/bin/sh -c` on this machine (the slot policy is what is tested here; the
workload tests run the same server into a real container)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_identity.exceptions import SshServerError
from tdx_identity.workload.ssh import HostKey, SessionRequest, SetupSshServer

MAX_CONNECTIONS = 8
PER_CLIENT = 2


def _local_shell(request: SessionRequest) -> Sequence[str]:
    return ["/bin/sh", "-c", request.command or "true"]


@pytest.fixture
def owner() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def server(owner: Ed25519PrivateKey) -> AsyncIterator[SetupSshServer]:
    raw = owner.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    srv = SetupSshServer(
        host="127.0.0.1",
        port=0,
        host_key=HostKey.generate(),
        owner_pubkey=raw,
        exec_argv_factory=_local_shell,
        login_timeout=30.0,  # the review's grace: the slots, not a short grace, must save us
        max_connections=MAX_CONNECTIONS,
        max_unauthenticated_per_client=PER_CLIENT,
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def _client_key(owner: Ed25519PrivateKey) -> asyncssh.SSHKey:
    pem = owner.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return asyncssh.import_private_key(pem)


async def _owner_runs(port: int, owner: Ed25519PrivateKey, source: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="owner",
        client_keys=[_client_key(owner)],
        known_hosts=None,
        local_addr=(source, 0),
        login_timeout=10,
    ) as conn:
        result = await asyncio.wait_for(conn.run("echo owner-in", check=True), 10)
    out = result.stdout
    return out if isinstance(out, str) else bytes(out or b"").decode()


async def _idle(
    port: int, source: str, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`count` TCP connections from `source` that never say a word."""
    idle = [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        for _ in range(count)
    ]
    await asyncio.sleep(0.3)  # each accepted (and the policy applied) by the server
    return idle


async def _still_open(idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of `idle` the server has not closed (no EOF within a second)."""
    open_count = 0
    for reader, _ in idle:
        try:
            await asyncio.wait_for(reader.read(), 1.0)  # returns at EOF: closed
        except TimeoutError:
            open_count += 1
        except ConnectionError:
            pass
    return open_count


def _close(idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in idle:
        writer.close()


async def test_eight_idle_connections_from_the_owners_address_do_not_lock_it_out(
    server: SetupSshServer, owner: Ed25519PrivateKey
) -> None:
    idle = await _idle(server.port, "127.0.0.1", MAX_CONNECTIONS + 2)
    try:
        # At most PER_CLIENT of them are held: the older ones were closed for the newer.
        assert await _still_open(idle) == PER_CLIENT
        assert await _owner_runs(server.port, owner, "127.0.0.1") == "owner-in\n"
    finally:
        _close(idle)
    assert server.evicted >= MAX_CONNECTIONS


async def test_idle_connections_from_many_clients_leave_a_slot_for_the_owner(
    server: SetupSshServer, owner: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    with caplog.at_level(logging.WARNING, logger="tdx_identity.workload.ssh"):
        try:
            # Every slot taken by unauthenticated connections of four other clients.
            for n in range(2, 6):
                idle += await _idle(server.port, f"127.0.0.{n}", PER_CLIENT)
            assert await _still_open(idle) == MAX_CONNECTIONS
            # A new client takes the slot of the oldest idle connection and authenticates.
            assert await _owner_runs(server.port, owner, "127.0.0.9") == "owner-in\n"
        finally:
            _close(idle)
    assert server.evicted == 1
    evictions = [r for r in caplog.records if "unauthenticated connection" in r.getMessage()]
    assert len(evictions) == 1


async def test_authenticated_connections_are_never_closed_for_a_new_one(
    server: SetupSshServer, owner: Ed25519PrivateKey
) -> None:
    key = _client_key(owner)
    sessions = [
        await asyncssh.connect(
            "127.0.0.1", server.port, username="owner", client_keys=[key], known_hosts=None
        )
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # Refused (closed at once, at most after the banner): every slot is the owner's.
        await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        for conn in sessions:
            result = await asyncio.wait_for(conn.run("echo still", check=True), 10)
            assert result.stdout == "still\n"
    finally:
        for conn in sessions:
            conn.close()
            await conn.wait_closed()
    assert server.evicted == 0


@pytest.mark.parametrize(
    ("max_connections", "per_client", "grace"), [(0, 2, 10.0), (8, 0, 10.0), (8, 2, 0.0)]
)
def test_slot_settings_are_validated(max_connections: int, per_client: int, grace: float) -> None:
    with pytest.raises(SshServerError):
        SetupSshServer(
            host="127.0.0.1",
            port=0,
            host_key=HostKey.generate(),
            owner_pubkey=b"\x01" * 32,
            exec_argv_factory=_local_shell,
            login_timeout=grace,
            max_connections=max_connections,
            max_unauthenticated_per_client=per_client,
        )
