"""A Verifier checks each (certificate, issuer) link once, keyed by the exact bytes of both: a
fleet's PCK CA is verified for the first quote only. What it has verified vouches for nothing
else: another leaf under that CA, a damaged copy of the CA, a chain to another root are each
verified on their own and refused; windows and revocation are checked on every use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from verify_world import NOW, World

from tdx_verify import PckChainError, RevokedError, RootCaError, Verifier


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _other(world: World, **keys: object) -> World:
    return World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
        **keys,  # type: ignore[arg-type]
    )


def _warm(world: World) -> Verifier:
    verifier = Verifier(root_ca_pem=world.root_pem)
    verifier.verify(world.quote(), world.collateral(), now=NOW)
    return verifier


def test_many_leaves_under_one_pck_ca_verify_with_one_verifier(world: World) -> None:
    verifier = _warm(world)
    collateral = world.collateral()
    for serial in (0x2001, 0x2002, 0x2003):
        quote = world.quote(leaf=world.make_pck_leaf(serial=serial))
        assert verifier.verify(quote, collateral, now=NOW).tcb_status


def test_a_verified_pck_ca_does_not_vouch_for_a_leaf_it_did_not_sign(world: World) -> None:
    verifier = _warm(world)
    # Same CA name and same PCK key, but the leaf is signed by another CA key.
    rogue = _other(world, root_key=world.root_key, pck_key=world.pck_key)
    quote = world.quote(leaf=rogue.pck_leaf)
    with pytest.raises(PckChainError, match="not signed by the PCK CA certificate"):
        verifier.verify(quote, world.collateral(), now=NOW)


def test_a_damaged_copy_of_a_verified_pck_ca_is_refused(world: World) -> None:
    verifier = _warm(world)
    good = world.quote()
    der = bytearray(world.pck_ca.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last octet of the signature's s: same length, signature broken
    pem = world.pck_ca.public_bytes(serialization.Encoding.PEM)
    damaged_pem = x509.load_der_x509_certificate(bytes(der)).public_bytes(
        serialization.Encoding.PEM
    )
    assert len(damaged_pem) == len(pem) and damaged_pem != pem
    assert good.count(pem) == 1
    quote = good.replace(pem, damaged_pem)  # the chain is not covered by any signature
    with pytest.raises(RootCaError, match="not issued by the pinned root CA"):
        verifier.verify(quote, world.collateral(), now=NOW)


def test_a_verified_link_is_still_checked_for_revocation_and_time(world: World) -> None:
    verifier = _warm(world)
    quote = world.quote()
    with pytest.raises(RevokedError, match="revoked by the root CA CRL"):
        verifier.verify(
            quote, world.collateral(revoked_by_root=[world.pck_ca.serial_number]), now=NOW
        )
    expired = world.make_pck_leaf(serial=0x3001, not_after=NOW + timedelta(days=1))
    quote = world.quote(leaf=expired)
    verifier.verify(quote, world.collateral(), now=NOW)
    with pytest.raises(PckChainError, match="PCK leaf certificate expired"):
        verifier.verify(quote, world.collateral(), now=NOW + timedelta(days=2))
