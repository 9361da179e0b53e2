"""What a fleet shares is verified once per process, not once per Verifier: the pinned root, a
collateral set (under that root), the links of CA and signing certificates to the root, and the
parsed PCK CA and root of a quote's chain, each keyed by the exact bytes it vouches for and
bounded. What is one machine's (its PCK leaf, QE report, quote signature) is checked on every
new chain, and nothing verified under one root vouches for anything under another."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from verify_world import NOW, World

from tdx_ppid import pck_chain_from_quote
from tdx_quote import parse_quote
from tdx_verify import CrlError, PckChainError, RootCaError, Verifier, _pki
from tdx_verify._pki import BoundedCache
from tdx_verify._verifier import _SHARED, clear_shared_caches


def _other_root(world: World) -> World:
    """The same names, a different root key: a look-alike PKI."""
    return World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
    )


def test_a_fresh_verifier_reuses_the_collateral_another_verified_under_the_same_root(
    world: World,
) -> None:
    collateral = world.collateral()
    first = Verifier(root_ca_pem=world.root_pem)._verified_collateral(collateral)
    again = Verifier(root_ca_pem=world.root_pem)._verified_collateral(collateral)
    assert again is first  # the private cache, knowingly


def test_collateral_verified_under_one_root_is_verified_again_under_another(
    world: World,
) -> None:
    collateral = world.collateral()
    Verifier(root_ca_pem=world.root_pem).verify(world.quote(), collateral, now=NOW)
    other = _other_root(world)
    # Its first check under the other root: the root CA CRL was not signed by that root.
    with pytest.raises(CrlError, match="root CA CRL signature does not verify"):
        Verifier(root_ca_pem=other.root_pem).verify(world.quote(), collateral, now=NOW)


def test_a_quote_whose_chain_is_under_another_root_is_refused_after_a_fleet_was_verified(
    world: World,
) -> None:
    Verifier(root_ca_pem=world.root_pem).verify(world.quote(), world.collateral(), now=NOW)
    other = _other_root(world)
    # The look-alike PCK CA and root have the same names; their PEM blocks differ, so nothing
    # read or verified for the real ones is used for them.
    with pytest.raises((RootCaError, PckChainError)):
        Verifier(root_ca_pem=world.root_pem).verify(other.quote(), world.collateral(), now=NOW)


def test_a_new_leaf_under_a_known_pck_ca_is_verified_by_a_fresh_verifier(world: World) -> None:
    Verifier(root_ca_pem=world.root_pem).verify(world.quote(), world.collateral(), now=NOW)
    rogue = World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
        root_key=world.root_key,
        pck_key=world.pck_key,
    )  # same root and PCK CA names, the leaf signed by another CA key
    quote = world.quote(leaf=rogue.pck_leaf)
    with pytest.raises(PckChainError, match="not signed by the PCK CA certificate"):
        Verifier(root_ca_pem=world.root_pem).verify(quote, world.collateral(), now=NOW)


def test_clearing_the_shared_caches_makes_the_next_verification_start_from_nothing(
    world: World,
) -> None:
    collateral = world.collateral()
    first = Verifier(root_ca_pem=world.root_pem)._verified_collateral(collateral)
    clear_shared_caches()
    for cache in (_SHARED.roots, _SHARED.collateral, _SHARED.root_links, _SHARED.cas):
        assert len(cache) == 0
    again = Verifier(root_ca_pem=world.root_pem)._verified_collateral(collateral)
    assert again is not first and again == first


def test_a_bounded_cache_keeps_the_most_recently_used_entries() -> None:
    cache: BoundedCache[int, int] = BoundedCache(3)
    for i in range(3):
        cache.put(i, i)
    assert cache.get(0) == 0  # 0 is now the most recent
    cache.put(3, 3)
    assert len(cache) == 3
    assert cache.get(1) is None and cache.get(0) == 0 and cache.get(3) == 3
    cache.clear()
    assert len(cache) == 0


class _CountingLinks(BoundedCache[tuple[bytes, bytes], bool]):
    """The process's cache of links to the root, remembering every link put in once verified."""

    def __init__(self) -> None:
        super().__init__(256)
        self.verified: list[tuple[bytes, bytes]] = []

    def put(self, key: tuple[bytes, bytes], value: bool) -> None:
        self.verified.append(key)
        super().put(key, value)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_each_link_to_the_root_is_verified_once_and_each_leaf_link_on_every_new_chain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_shared_caches()
    links = _CountingLinks()
    monkeypatch.setattr(_SHARED, "root_links", links)
    checked: list[bytes] = []
    real_check = _pki.check_issued_by

    def counting_check(cert: x509.Certificate, issuer: _pki.CaInfo) -> None:
        real_check(cert, issuer)
        checked.append(_der(cert))

    monkeypatch.setattr(_pki, "check_issued_by", counting_check)
    collateral = world.collateral()
    Verifier(root_ca_pem=world.root_pem).verify(world.quote(), collateral, now=NOW)
    # The TCB signer signs the TCB info and the QE identity; the PCK CA issues the PCK CRL and
    # the leaf: each link to the root is verified once.
    assert sorted(links.verified) == sorted(
        [(_der(world.tcb_signer), world.root_der), (_der(world.pck_ca), world.root_der)]
    )
    assert checked.count(_der(world.pck_leaf)) == 1
    first = len(checked)
    leaves = [world.make_pck_leaf(serial=serial) for serial in (0x2001, 0x2002)]
    for leaf in leaves:  # new machines, each checked by a fresh Verifier: their own link only
        Verifier(root_ca_pem=world.root_pem).verify(world.quote(leaf=leaf), collateral, now=NOW)
    assert checked[first:] == [_der(leaf) for leaf in leaves]
    assert len(links.verified) == 2
    again = Verifier(root_ca_pem=world.root_pem)
    again.verify(world.quote(leaf=leaves[0]), collateral, now=NOW)
    assert checked[-1] == _der(leaves[0])  # a new Verifier checks the leaf link again
    again.verify(world.quote(leaf=leaves[0]), collateral, now=NOW)
    assert len(checked) == first + 3  # the same Verifier does not: its PCK chain is cached


def test_names_read_from_the_der_are_the_names_cryptography_reads(
    world: World, real_quote: bytes
) -> None:
    certs = [world.root, world.pck_ca, world.tcb_signer, world.pck_leaf]
    certs += pck_chain_from_quote(parse_quote(real_quote, allow_zero_padding=True))
    for cert in certs:
        issuer, subject = _pki.tbs_names(cert.tbs_certificate_bytes)
        assert issuer == cert.issuer.public_bytes()
        assert subject == cert.subject.public_bytes()
    crl = x509.load_der_x509_crl(world.collateral().pck_crl)
    assert _pki.crl_issuer_der(crl.tbs_certlist_bytes) == crl.issuer.public_bytes()


@pytest.mark.parametrize("tbs", [b"", b"\x30", b"\x31\x00", b"\x30\x03\x02\x01\x01", b"\x30\x05"])
def test_a_structure_that_is_not_a_tbs_certificate_is_a_value_error(tbs: bytes) -> None:
    with pytest.raises(ValueError, match="TBSCertificate"):
        _pki.tbs_names(tbs)
