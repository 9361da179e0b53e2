"""attested_ssh_target against the real registry holding the TD's record and the TD's identity
routes answering with fresh sim quotes, both verified with the sim's root: the host key both
measure is pinned; a fresh log naming another owner, measuring no SSH host key, or measuring
another one than the record's is refused, and no target is returned."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tdxctl_support import PODMAN, SimTd, host_key_line, identity_app, raw, served_registry

from tdx_measure import IdentityEvent, SshHostKeyEvent
from tdx_service_kit.testing import serve
from tdxctl import (
    ExpectationFailed,
    HostKeyMismatch,
    IdentityClient,
    QuoteVerifier,
    RegistryClient,
    SshTarget,
    attested_ssh_target,
)

OPERATOR = Ed25519PrivateKey.generate()
OWNER = Ed25519PrivateKey.generate()

Clients = tuple[IdentityClient, RegistryClient]
Connect = Callable[[], AbstractAsyncContextManager[Clients]]


@pytest.fixture
def connect(tmp_path: Path, td: SimTd, sim_url: str) -> Connect:
    """`async with connect() as (identity, registry)`: the real registry holding the record of
    `td` as it is now, and `td`'s identity routes, which answer with its state at each request
    (so a test changes the TD between the registration and the fresh attestation)."""

    @asynccontextmanager
    async def clients() -> AsyncIterator[Clients]:
        async with (
            served_registry(tmp_path / "registry.db", td, sim_url) as registry_url,
            serve(identity_app(td)) as identity_url,
            IdentityClient(identity_url) as identity,
            RegistryClient(registry_url) as registry,
        ):
            yield identity, registry

    return clients


async def test_the_host_key_the_record_and_a_fresh_attestation_measure_is_pinned(
    td: SimTd, connect: Connect, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    async with connect() as (identity, registry):
        target = await attested_ssh_target(identity, registry, OWNER, verifier)
    assert target.host_key == host_key_line(td.ssh_host_key)
    assert target.record.ssh_host_key == target.attestation.ssh_host_key == target.host_key
    assert target.record.owner == target.attestation.owner == raw(OWNER)
    assert target.attestation.nonce is not None and target.record.nonce is None


async def refused(
    connect: Connect, verifier: QuoteVerifier, change: Callable[[], None] | None = None
) -> pytest.ExceptionInfo[Exception]:
    """attested_ssh_target's refusal once `change` altered the TD after its registration; it
    returned no target."""
    targets: list[SshTarget] = []
    async with connect() as (identity, registry):
        if change is not None:
            change()
        with pytest.raises((ExpectationFailed, HostKeyMismatch)) as refusal:
            targets.append(await attested_ssh_target(identity, registry, OWNER, verifier))
    assert targets == []
    return refusal


async def test_a_fresh_log_naming_another_owner_is_refused(
    td: SimTd, connect: Connect, verifier: QuoteVerifier
) -> None:
    """After the registration the TD measured another owner: the record (owner OWNER)
    verifies, the fresh attestation verifies, but its latest owner is another key."""
    td.delegated(OPERATOR, OWNER)
    stranger = raw(Ed25519PrivateKey.generate())
    refusal = await refused(
        connect, verifier, lambda: td.append(IdentityEvent(role="owner", pubkey=stranger))
    )
    assert refusal.type is ExpectationFailed
    assert isinstance(refusal.value, ExpectationFailed)
    assert refusal.value.check == "expectation"
    assert refusal.value.reason == (
        "the fresh attestation's event log does not name the record's owner"
    )


async def test_a_fresh_attestation_measuring_no_ssh_host_key_is_refused(
    td: SimTd, connect: Connect, verifier: QuoteVerifier
) -> None:
    """Operator and owner registered, but the TD never measured an SSH host key."""
    td.append(PODMAN)
    td.register("operator", OPERATOR)
    td.register("owner", OWNER)
    refusal = await refused(connect, verifier)
    assert refusal.type is HostKeyMismatch
    assert isinstance(refusal.value, HostKeyMismatch)
    assert refusal.value.check == "ssh_host_key"
    assert refusal.value.reason == (
        "the fresh attestation measures no SSH host key (SSH is open only between "
        "configure and expose)"
    )


async def test_a_record_measuring_another_ssh_host_key_than_the_fresh_attestation_is_refused(
    td: SimTd, connect: Connect, verifier: QuoteVerifier
) -> None:
    """The record's log measures one host key; after its registration the TD measured
    another (as a restart of the identity service does), which the fresh attestation shows."""
    td.delegated(OPERATOR, OWNER)
    other = host_key_line(Ed25519PrivateKey.generate())
    refusal = await refused(connect, verifier, lambda: td.append(SshHostKeyEvent(public_key=other)))
    assert refusal.type is HostKeyMismatch
    assert isinstance(refusal.value, HostKeyMismatch)
    assert refusal.value.check == "ssh_host_key"
    assert refusal.value.reason == (
        "the record's measured SSH host key is not the one the fresh attestation measures"
    )


async def test_a_record_measuring_no_ssh_host_key_is_refused(
    td: SimTd, connect: Connect, verifier: QuoteVerifier
) -> None:
    """Registered before the TD measured its SSH host key; the fresh attestation measures one."""
    td.append(PODMAN)
    td.register("operator", OPERATOR)
    td.register("owner", OWNER)
    line = host_key_line(td.ssh_host_key)
    refusal = await refused(connect, verifier, lambda: td.append(SshHostKeyEvent(public_key=line)))
    assert refusal.type is HostKeyMismatch
    assert isinstance(refusal.value, HostKeyMismatch)
    assert refusal.value.reason == (
        "the record's measured SSH host key is not the one the fresh attestation measures"
    )
