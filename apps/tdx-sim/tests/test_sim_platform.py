"""Sim quotes and collateral: well-formed, and judged by dcap-qvl as a hardware quote would be."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tdx_ppid import PpidKind, quote_ppid
from tdx_quote import (
    CertificationDataType,
    TdReport10,
    TeeType,
    build_enclave_report,
    parse_quote,
)
from tdx_sim.platform import (
    DEFAULT_MR_TD,
    SIM_ADVISORY_ID,
    SimOptions,
    SimOptionsError,
    SimPlatform,
)

REPORT_DATA = hashlib.sha512(b"sim test").digest()


def _verify_raw(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def test_quote_parses_as_v4_with_type6_wrapping_type5(platform: SimPlatform) -> None:
    raw = platform.quote(REPORT_DATA)
    quote = parse_quote(raw)
    assert quote.header.version == 4
    assert quote.header.tee_type == TeeType.TDX
    assert isinstance(quote.body, TdReport10)
    assert quote.body.report_data == REPORT_DATA
    assert quote.body.mr_td == DEFAULT_MR_TD
    assert not quote.body.debug
    cert_data = quote.signature_data.certification_data
    assert cert_data.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA
    inner = quote.qe_report_cert_data.certification_data
    assert inner.cert_type == CertificationDataType.PCK_CERT_CHAIN
    assert inner.body == platform.pki.pck_chain_pem


def test_quote_signatures_bind_attestation_key_and_body(platform: SimPlatform) -> None:
    quote = parse_quote(platform.quote(REPORT_DATA))
    sig = quote.signature_data
    qe = quote.qe_report_cert_data
    # the QE report is signed by the PCK key and commits to the attestation key
    _verify_raw(
        platform.pki.pck_cert.public_key(),  # type: ignore[arg-type]
        qe.qe_report_signature,
        build_enclave_report(qe.qe_report),
    )
    expected = hashlib.sha256(sig.attestation_key + qe.qe_auth_data).digest()
    assert qe.qe_report.report_data == expected + bytes(32)
    # the quote is signed by that attestation key
    attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + sig.attestation_key
    )
    _verify_raw(attestation_key, sig.signature, quote.signed_bytes)


def test_quote_ppid_is_the_pck_certificates(platform: SimPlatform) -> None:
    ppid = quote_ppid(parse_quote(platform.quote(REPORT_DATA)))
    assert ppid.kind == PpidKind.PCK_CERTIFICATE
    assert ppid.value == platform.ppid


def test_report_data_must_be_64_bytes(platform: SimPlatform) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        platform.quote(bytes(63))


def test_dcap_qvl_accepts_a_default_quote_as_up_to_date(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    quote = platform.quote(REPORT_DATA)
    verdict = dcap_verify(platform, quote, platform.collateral(datetime.now(UTC)))
    assert verdict.status == "UpToDate"
    assert verdict.advisory_ids == []
    report = json.loads(verdict.to_json())["report"]
    assert bytes.fromhex(report["TD10"]["report_data"]) == REPORT_DATA


def test_dcap_qvl_refuses_the_sim_quote_under_intels_root(platform: SimPlatform) -> None:
    quote = platform.quote(REPORT_DATA)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(
        json.dumps(platform.collateral(datetime.now(UTC)))
    )
    with pytest.raises(ValueError, match="InvalidCrlSignatureForPublicKey"):
        dcap_qvl.verify(quote, collateral, int(time.time()))  # Intel's built-in root


def test_tcb_status_flag_reaches_dcap_qvl(state_dir: Path, dcap_verify: Any) -> None:
    platform = SimPlatform(state_dir, SimOptions(tcb_status="OutOfDate"))
    quote = platform.quote(REPORT_DATA)
    verdict = dcap_verify(platform, quote, platform.collateral(datetime.now(UTC)))
    assert verdict.status == "OutOfDate"
    assert verdict.advisory_ids == [SIM_ADVISORY_ID]


def test_sw_hardening_needed_carries_an_advisory(state_dir: Path, dcap_verify: Any) -> None:
    platform = SimPlatform(state_dir, SimOptions(tcb_status="SWHardeningNeeded"))
    verdict = dcap_verify(
        platform, platform.quote(REPORT_DATA), platform.collateral(datetime.now(UTC))
    )
    assert verdict.status == "SWHardeningNeeded"
    assert verdict.advisory_ids == [SIM_ADVISORY_ID]


def test_revoked_pck_is_refused_by_dcap_qvl(state_dir: Path, dcap_verify: Any) -> None:
    platform = SimPlatform(state_dir, SimOptions(revoke_pck=True))
    quote = platform.quote(REPORT_DATA)
    with pytest.raises(ValueError, match="CertRevoked"):
        dcap_verify(platform, quote, platform.collateral(datetime.now(UTC)))


def test_revoke_flag_lists_exactly_the_pck_serial(state_dir: Path) -> None:
    platform = SimPlatform(state_dir, SimOptions(revoke_pck=True))
    crl = x509.load_der_x509_crl(bytes.fromhex(platform.collateral(datetime.now(UTC))["pck_crl"]))
    assert [r.serial_number for r in crl] == [platform.pki.pck_cert.serial_number]


def test_debug_td_sets_the_debug_bit_and_dcap_qvl_refuses_it(
    state_dir: Path, dcap_verify: Any
) -> None:
    platform = SimPlatform(state_dir, SimOptions(debug_td=True))
    quote = platform.quote(REPORT_DATA)
    body = parse_quote(quote).body
    assert body.debug
    assert body.td_attributes[0] & 0x01
    with pytest.raises(ValueError, match=r"[Dd]ebug"):
        dcap_verify(platform, quote, platform.collateral(datetime.now(UTC)))


def test_mrtd_option_sets_mrtd_and_still_verifies(state_dir: Path, dcap_verify: Any) -> None:
    mr_td = bytes(range(48))
    platform = SimPlatform(state_dir, SimOptions(mr_td=mr_td))
    quote = platform.quote(REPORT_DATA)
    assert parse_quote(quote).body.mr_td == mr_td
    verdict = dcap_verify(platform, quote, platform.collateral(datetime.now(UTC)))
    assert verdict.status == "UpToDate"
    assert bytes.fromhex(json.loads(verdict.to_json())["report"]["TD10"]["mr_td"]) == mr_td


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tcb_status": "Fine"}, "unknown TCB status"),
        ({"mr_td": bytes(47)}, "48 bytes"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SimOptionsError, match=match):
        SimOptions(**kwargs)  # type: ignore[arg-type]


def test_collateral_is_valid_now_and_expires_after_next_update(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    now = datetime.now(UTC)
    collateral = platform.collateral(now)
    tcb_info = json.loads(collateral["tcb_info"])
    issued = datetime.fromisoformat(tcb_info["issueDate"])
    next_update = datetime.fromisoformat(tcb_info["nextUpdate"])
    assert issued <= now < next_update
    assert next_update - now >= timedelta(days=29)
    quote = platform.quote(REPORT_DATA)
    dcap_verify(platform, quote, collateral, int(now.timestamp()) + 86400)
    with pytest.raises(ValueError, match=r"[Ee]xpired"):
        dcap_verify(platform, quote, collateral, int((next_update + timedelta(days=1)).timestamp()))


def test_collateral_shape_follows_intels(platform: SimPlatform) -> None:
    collateral = platform.collateral(datetime.now(UTC))
    tcb_info = json.loads(collateral["tcb_info"])
    assert (tcb_info["id"], tcb_info["version"], tcb_info["tcbType"]) == ("TDX", 3, 0)
    assert tcb_info["fmspc"] == platform.fmspc.hex().upper()
    assert tcb_info["pceId"] == "0000"
    assert {"mrsigner", "attributes", "attributesMask"} <= tcb_info["tdxModule"].keys()
    assert [m["id"] for m in tcb_info["tdxModuleIdentities"]] == ["TDX_01"]
    level = tcb_info["tcbLevels"][0]
    assert len(level["tcb"]["sgxtcbcomponents"]) == 16
    assert len(level["tcb"]["tdxtcbcomponents"]) == 16
    assert level["tcbStatus"] == "UpToDate" and "advisoryIDs" not in level
    qe_identity = json.loads(collateral["qe_identity"])
    assert (qe_identity["id"], qe_identity["version"]) == ("TD_QE", 2)


def test_collateral_signatures_verify_under_the_tcb_signing_key(platform: SimPlatform) -> None:
    collateral = platform.collateral(datetime.now(UTC))
    key = platform.pki.tcb_signing_cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    for name in ("tcb_info", "qe_identity"):
        signature = bytes.fromhex(collateral[f"{name}_signature"])
        assert len(signature) == 64
        _verify_raw(key, signature, collateral[name].encode())
