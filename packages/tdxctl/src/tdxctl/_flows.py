"""The steps that put verification before trust: registering an operator, or an owner, only
for an instance whose fresh attestation verifies (and, for the owner, proving afterwards from
another fresh attestation that the instance measured it), and finding the SSH host key to pin
from a verified record and a fresh attestation that agree."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdxctl._clients import IdentityClient, RegistryClient
from tdxctl._errors import ExpectationFailed, HostKeyMismatch
from tdxctl._keys import public_key_bytes
from tdxctl._verify import QuoteVerifier, VerifiedFacts, verify_attestation, verify_record

__all__ = [
    "NONCE_BYTES",
    "OperatorRegistration",
    "OwnerRegistration",
    "SshTarget",
    "attested_ssh_target",
    "fresh_attestation",
    "register_operator",
    "register_owner",
]

NONCE_BYTES = 32


async def fresh_attestation(
    identity: IdentityClient,
    instance_pubkey: bytes,
    verifier: QuoteVerifier,
    *,
    expect_ppid: bytes | None = None,
) -> VerifiedFacts:
    """Challenge the instance with a random nonce and verify its answer."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    answer = await identity.attestation(nonce)
    return await verify_attestation(
        answer,
        instance_pubkey=instance_pubkey,
        nonce=nonce,
        verifier=verifier,
        expect_ppid=expect_ppid,
    )


@dataclass(frozen=True)
class OperatorRegistration:
    """The verified attestation the operator signed for, and the owner token it got back."""

    attestation: VerifiedFacts
    owner_token: str


async def register_operator(
    identity: IdentityClient, key: Ed25519PrivateKey, verifier: QuoteVerifier
) -> OperatorRegistration:
    """Verify a fresh attestation of the instance key the service names (DCAP, challenge
    binding, log replay), and only then sign that key and register as its operator."""
    instance = await identity.instance_pubkey()
    attestation = await fresh_attestation(identity, instance, verifier)
    token = await identity.register_operator(key, instance)
    return OperatorRegistration(attestation=attestation, owner_token=token)


@dataclass(frozen=True)
class OwnerRegistration:
    """The fresh attestation that showed the instance under its operator before the owner
    signed, and the one after the registration, whose log names the owner."""

    before: VerifiedFacts
    after: VerifiedFacts


def _same_key(attested: bytes | None, expected: bytes) -> bool:
    return attested is not None and hmac.compare_digest(attested, expected)


async def register_owner(
    identity: IdentityClient,
    key: Ed25519PrivateKey,
    token: str,
    verifier: QuoteVerifier,
    *,
    expect_operator: bytes | None = None,
) -> OwnerRegistration:
    """Verify a fresh attestation of the instance key the service names (DCAP, challenge
    binding, log replay) whose log names an operator (`expect_operator`, when given); only
    then sign that key and register as its owner with the operator's `token`; then verify
    another fresh attestation of the same instance and platform whose log names this owner
    under the same operator. A service that accepts the registration without measuring it,
    or measures another owner, fails with ExpectationFailed."""
    instance = await identity.instance_pubkey()
    before = await fresh_attestation(identity, instance, verifier)
    if before.operator is None:
        raise ExpectationFailed(
            "the instance's fresh attestation names no operator: the operator registers first"
        )
    if expect_operator is not None and not _same_key(before.operator, expect_operator):
        raise ExpectationFailed(
            "the instance's fresh attestation does not name the expected operator"
        )
    await identity.register_owner(key, instance, token)
    after = await fresh_attestation(identity, instance, verifier, expect_ppid=before.ppid)
    if not _same_key(after.owner, public_key_bytes(key)):
        raise ExpectationFailed(
            "the registration was answered, but the instance's fresh attestation does not name "
            "this owner"
        )
    if not _same_key(after.operator, before.operator):
        raise ExpectationFailed(
            "the instance's fresh attestation after the registration names another operator"
        )
    return OwnerRegistration(before=before, after=after)


@dataclass(frozen=True)
class SshTarget:
    """The verified record, the fresh attestation, and the host key both measured."""

    record: VerifiedFacts
    attestation: VerifiedFacts
    host_key: str


async def attested_ssh_target(
    identity: IdentityClient,
    registry: RegistryClient,
    key: Ed25519PrivateKey,
    verifier: QuoteVerifier,
) -> SshTarget:
    """The host key to pin: the record verifies with `key` as its owner; a fresh attestation
    of the same instance and platform verifies, its log names that owner and measures an SSH
    host key, and the record's verified log measures the same key."""
    instance = await identity.instance_pubkey()
    record = await registry.record(instance)
    facts = await verify_record(
        record, instance_pubkey=instance, verifier=verifier, expect_owner=public_key_bytes(key)
    )
    fresh = await fresh_attestation(identity, instance, verifier, expect_ppid=record.ppid)
    if (
        facts.owner is None
        or fresh.owner is None
        or not hmac.compare_digest(fresh.owner, facts.owner)
    ):
        raise ExpectationFailed(
            "the fresh attestation's event log does not name the record's owner"
        )
    if fresh.ssh_host_key is None:
        raise HostKeyMismatch(
            "the fresh attestation measures no SSH host key (SSH is open only between "
            "configure and expose)"
        )
    if facts.ssh_host_key is None or not hmac.compare_digest(
        facts.ssh_host_key.encode(), fresh.ssh_host_key.encode()
    ):
        raise HostKeyMismatch(
            "the record's measured SSH host key is not the one the fresh attestation measures"
        )
    return SshTarget(record=facts, attestation=fresh, host_key=fresh.ssh_host_key)
