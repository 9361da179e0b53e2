"""The test PKI: created once, kept across restarts, shaped like Intel's chain."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tdx_ppid import parse_sgx_extension
from tdx_sim.pki import (
    PCK_CN,
    PLATFORM_CA_CN,
    ROOT_CA_CN,
    SIM_CPU_SVN,
    SIM_FMSPC,
    SIM_PCE_ID,
    SIM_TCB_COMPONENTS,
    TCB_SIGNING_CN,
    PkiError,
    load_or_create_pki,
)
from tdx_sim.platform import SimOptions, SimPlatform

NOW = datetime.now(UTC)


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_restart_keeps_the_same_root_ppid_and_keys(state_dir: Path) -> None:
    first = load_or_create_pki(state_dir, now=NOW)
    second = load_or_create_pki(state_dir, now=NOW + timedelta(days=3))
    assert second.root_ca_pem == first.root_ca_pem
    assert second.sgx_extension.ppid == first.sgx_extension.ppid
    assert second.pck_cert == first.pck_cert
    assert second.attestation_key.private_numbers() == first.attestation_key.private_numbers()


def test_a_new_state_dir_gets_a_new_root_and_ppid(tmp_path: Path) -> None:
    a = load_or_create_pki(tmp_path / "a", now=NOW)
    b = load_or_create_pki(tmp_path / "b", now=NOW)
    assert a.root_ca_pem != b.root_ca_pem
    assert a.sgx_extension.ppid != b.sgx_extension.ppid


def test_root_ca_pem_is_written_and_restored(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    root_file = state_dir / "root_ca.pem"
    assert root_file.read_bytes() == pki.root_ca_pem
    root_file.unlink()
    load_or_create_pki(state_dir, now=NOW)
    assert root_file.read_bytes() == pki.root_ca_pem


def test_private_keys_are_owner_only(state_dir: Path) -> None:
    load_or_create_pki(state_dir, now=NOW)
    keys = sorted((state_dir / "pki").glob("*.key"))
    assert [k.name for k in keys] == [
        "attestation.key",
        "pck.key",
        "platform_ca.key",
        "root_ca.key",
        "tcb_signing.key",
    ]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE((state_dir / "pki").stat().st_mode) == 0o700
    assert not [p for p in state_dir.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_chain_mirrors_intels_names_and_extensions(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    assert _cn(pki.root_cert.subject) == ROOT_CA_CN == _cn(pki.root_cert.issuer)
    assert _cn(pki.platform_ca_cert.subject) == PLATFORM_CA_CN
    assert pki.platform_ca_cert.issuer == pki.root_cert.subject
    assert _cn(pki.pck_cert.subject) == PCK_CN
    assert pki.pck_cert.issuer == pki.platform_ca_cert.subject
    assert _cn(pki.tcb_signing_cert.subject) == TCB_SIGNING_CN
    assert pki.tcb_signing_cert.issuer == pki.root_cert.subject

    for ca, path_length in ((pki.root_cert, 1), (pki.platform_ca_cert, 0)):
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == path_length
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    for leaf in (pki.pck_cert, pki.tcb_signing_cert):
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    for cert in (pki.root_cert, pki.platform_ca_cert, pki.pck_cert, pki.tcb_signing_cert):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    # each certificate verifies under its issuer
    pki.root_cert.verify_directly_issued_by(pki.root_cert)
    pki.platform_ca_cert.verify_directly_issued_by(pki.root_cert)
    pki.pck_cert.verify_directly_issued_by(pki.platform_ca_cert)
    pki.tcb_signing_cert.verify_directly_issued_by(pki.root_cert)


def test_pck_leaf_carries_the_sgx_extension(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    ext = parse_sgx_extension(pki.pck_cert)
    assert ext == pki.sgx_extension
    assert len(ext.ppid) == 16
    assert ext.fmspc == SIM_FMSPC
    assert ext.pce_id == SIM_PCE_ID
    assert ext.cpu_svn == SIM_CPU_SVN
    assert ext.tcb_components == SIM_TCB_COMPONENTS
    assert ext.sgx_type == 0


def test_crls_are_signed_by_their_issuer_and_list_revoked_serials(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    later = NOW + timedelta(days=30)
    root_crl = x509.load_der_x509_crl(pki.root_ca_crl(this_update=NOW, next_update=later))
    assert root_crl.is_signature_valid(pki.root_key.public_key())
    assert root_crl.issuer == pki.root_cert.subject
    assert len(root_crl) == 0

    serial = pki.pck_cert.serial_number
    clean = x509.load_der_x509_crl(pki.pck_crl(this_update=NOW, next_update=later))
    revoked = x509.load_der_x509_crl(
        pki.pck_crl(this_update=NOW, next_update=later, revoked=[serial])
    )
    for crl in (clean, revoked):
        assert crl.is_signature_valid(pki.platform_ca_key.public_key())
        assert crl.issuer == pki.platform_ca_cert.subject
        assert crl.next_update_utc is not None and crl.next_update_utc > NOW
    assert clean.get_revoked_certificate_by_serial_number(serial) is None
    assert revoked.get_revoked_certificate_by_serial_number(serial) is not None


def test_a_damaged_pki_is_refused_not_replaced(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    (state_dir / "pki" / "pck.key").write_bytes(b"not a key")
    with pytest.raises(PkiError, match="cannot load"):
        load_or_create_pki(state_dir, now=NOW)
    # the root is untouched: nobody silently swapped the trust anchor
    assert (state_dir / "root_ca.pem").read_bytes() == pki.root_ca_pem


def test_a_key_not_matching_its_certificate_is_refused(state_dir: Path) -> None:
    load_or_create_pki(state_dir, now=NOW)
    pki_dir = state_dir / "pki"
    (pki_dir / "pck.key").write_bytes((pki_dir / "root_ca.key").read_bytes())
    with pytest.raises(PkiError, match="does not match"):
        load_or_create_pki(state_dir, now=NOW)


def test_platform_over_a_kept_state_dir_reports_the_same_ppid(state_dir: Path) -> None:
    first = SimPlatform(state_dir, SimOptions())
    second = SimPlatform(state_dir, SimOptions(tcb_status="OutOfDate"))
    assert first.ppid == second.ppid
    assert first.root_ca_pem == second.root_ca_pem
