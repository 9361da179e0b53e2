"""Minting more platforms under the sim's PCK Platform CA: a fleet of one FMSPC whose quotes
all verify against the one collateral set, each with its own PCK certificate and PPID."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tdx_ppid import parse_sgx_extension, quote_ppid
from tdx_quote import parse_quote
from tdx_sim.pki import load_or_create_pki
from tdx_sim.platform import SimOptions, SimPlatform

NOW = datetime.now(UTC)
REPORT_DATA = bytes(range(64))


def test_minted_pki_keeps_the_cas_and_changes_the_pck_and_attestation_key(
    state_dir: Path,
) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    minted = pki.mint_platform(now=NOW)
    assert minted.root_cert == pki.root_cert
    assert minted.platform_ca_cert == pki.platform_ca_cert
    assert minted.tcb_signing_cert == pki.tcb_signing_cert
    assert minted.pck_cert.serial_number != pki.pck_cert.serial_number
    assert minted.pck_cert.public_key() == minted.pck_key.public_key()
    assert minted.pck_cert.public_key() != pki.pck_cert.public_key()
    assert minted.attestation_key.public_key() != pki.attestation_key.public_key()
    minted.pck_cert.verify_directly_issued_by(pki.platform_ca_cert)
    ext = parse_sgx_extension(minted.pck_cert)
    assert ext == minted.sgx_extension
    assert ext.ppid != pki.sgx_extension.ppid
    assert (ext.fmspc, ext.pce_id, ext.tcb_components, ext.pce_svn, ext.cpu_svn) == (
        pki.sgx_extension.fmspc,
        pki.sgx_extension.pce_id,
        pki.sgx_extension.tcb_components,
        pki.sgx_extension.pce_svn,
        pki.sgx_extension.cpu_svn,
    )


def test_a_chosen_ppid_is_used(state_dir: Path) -> None:
    minted = load_or_create_pki(state_dir, now=NOW).mint_platform(now=NOW, ppid=bytes(16))
    assert parse_sgx_extension(minted.pck_cert).ppid == bytes(16)


def test_minting_writes_nothing_to_the_state_dir(state_dir: Path) -> None:
    pki = load_or_create_pki(state_dir, now=NOW)
    before = sorted((p.name, p.read_bytes()) for p in state_dir.rglob("*") if p.is_file())
    pki.mint_platform(now=NOW)
    after = sorted((p.name, p.read_bytes()) for p in state_dir.rglob("*") if p.is_file())
    assert after == before
    assert load_or_create_pki(state_dir, now=NOW).pck_cert == pki.pck_cert


def test_fleet_quotes_verify_against_the_base_platforms_collateral(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    fleet = [platform.mint_platform(now=NOW) for _ in range(3)]
    collateral = platform.collateral(NOW)
    ppids = set()
    for member in fleet:
        assert member.options == platform.options
        quote = member.quote(REPORT_DATA)
        verdict = dcap_verify(platform, quote, collateral)
        assert verdict.status == "UpToDate"
        ppid = quote_ppid(parse_quote(quote)).value
        assert ppid == member.ppid
        ppids.add(ppid)
    assert len(ppids | {platform.ppid}) == 4


def test_minted_platform_keeps_the_options_and_boots_fresh(state_dir: Path) -> None:
    base = SimPlatform(state_dir, SimOptions(tcb_status="OutOfDate"))
    base.rtmrs.extend(3, bytes(48))
    member = base.mint_platform()
    assert member.options == base.options
    assert member.rtmrs.read()[3] == bytes(48)
    assert base.rtmrs.read()[3] != bytes(48)
