"""Every reject path, on quotes and collateral from a synthetic test PKI, and agreement with
dcap-qvl (`verify_with_root_ca`) wherever dcap-qvl checks the same thing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from verify_agree import both
from verify_world import NOW, World, raw_sign

from tdx_verify import (
    CollateralFormatError,
    CollateralMismatchError,
    CollateralSignatureError,
    CrlError,
    DebugTdRejected,
    MeasurementRejected,
    PckChainError,
    Policy,
    QeIdentityError,
    QuoteParseError,
    QuoteSignatureError,
    RevokedError,
    RootCaError,
    TcbLevelError,
    TcbStatusRejected,
    TdAttributesRejected,
    VerificationError,
    Verifier,
)

STATUSES = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
]
SEPT_VE_DISABLE = bytes.fromhex("0000001000000000")


def check(
    world: World,
    quote: bytes,
    collateral: Any,
    error: type[VerificationError] | None,
    *,
    agree: bool = True,
) -> None:
    v = both(quote, collateral, NOW, root_pem=world.root_pem, root_der=world.root_der)
    if error is None:
        assert v.ours_error is None, v.ours_error
    else:
        assert isinstance(v.ours_error, error), v.ours_error
    if agree:
        assert v.ours_status == v.ref_status, (v.ours_error, v.ref_error)


def verifier(world: World, **policy: Any) -> Verifier:
    return Verifier(root_ca_pem=world.root_pem, policy=Policy(**policy))


# -- TCB status ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_platform_tcb_status_and_advisories_match_dcap_qvl(world: World, status: str) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = status
    info["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-00001"]
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    check(world, quote, collateral, None)
    result = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert result.tcb_status == status
    assert result.advisory_ids == ("INTEL-SA-00001",)


def test_revoked_tcb_status_is_never_accepted(world: World) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = "Revoked"
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    check(world, quote, collateral, TcbStatusRejected)


def test_default_policy_refuses_out_of_date_and_reports_the_status(world: World) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcbStatus"] = "OutOfDate"
    info["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-00002"]
    with pytest.raises(TcbStatusRejected) as exc:
        verifier(world).verify(world.quote(), world.collateral(tcb_info=info), now=NOW)
    assert exc.value.tcb_status == "OutOfDate"
    assert exc.value.advisory_ids == ("INTEL-SA-00002",)


def test_lower_platform_tcb_falls_to_a_lower_level(world: World) -> None:
    info = world.tcb_info_dict()
    info["tcbLevels"][0]["tcb"]["pcesvn"] = 200  # the first level is now out of reach
    quote, collateral = world.quote(), world.collateral(tcb_info=info)
    check(world, quote, collateral, None)
    result = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert result.tcb_status == "OutOfDate"
    assert "INTEL-SA-00837" in result.advisory_ids


def test_no_matching_tcb_level_is_refused(world: World) -> None:
    info = world.tcb_info_dict()
    for level in info["tcbLevels"]:
        level["tcb"]["tdxtcbcomponents"][2]["svn"] = 200
    check(world, world.quote(), world.collateral(tcb_info=info), TcbLevelError)


def test_out_of_date_qe_makes_the_status_out_of_date(world: World) -> None:
    ident = world.qe_identity_dict()
    ident["tcbLevels"] = [
        {"tcb": {"isvsvn": 200}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
        {
            "tcb": {"isvsvn": 0},
            "tcbDate": "2020-03-13T00:00:00Z",
            "tcbStatus": "OutOfDate",
            "advisoryIDs": ["INTEL-SA-00003"],
        },
    ]
    quote, collateral = world.quote(), world.collateral(qe_identity=ident)
    check(world, quote, collateral, None)
    result = verifier(world, accepted_tcb_statuses=None).verify(quote, collateral, now=NOW)
    assert (result.tcb_status, result.advisory_ids) == ("OutOfDate", ("INTEL-SA-00003",))


# -- QE identity --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"mr_signer": bytes(32)},
        {"isv_prod_id": 7},
        {"misc_select": 1},
        {"attributes": bytes.fromhex("13000000000000000000000000000000")},
        {"isv_svn": 1},  # below the only QE identity level (4)
    ],
)
def test_qe_report_not_matching_the_qe_identity_is_refused(
    world: World, changes: dict[str, Any]
) -> None:
    check(world, world.quote(qe_report_changes=changes), world.collateral(), QeIdentityError)


# -- PCK chain and revocation ---------------------------------------------------------------


def test_revoked_pck_certificate_is_refused(world: World) -> None:
    collateral = world.collateral(revoked_pck=[world.pck_leaf.serial_number])
    check(world, world.quote(), collateral, RevokedError)


def test_pck_ca_revoked_by_the_root_crl_is_refused(world: World) -> None:
    collateral = world.collateral(revoked_by_root=[world.pck_ca.serial_number])
    check(world, world.quote(), collateral, RevokedError)


def test_tcb_signer_revoked_by_the_root_crl_is_refused(world: World) -> None:
    collateral = world.collateral(revoked_by_root=[world.tcb_signer.serial_number])
    check(world, world.quote(), collateral, RevokedError)


def test_expired_pck_leaf_is_refused(world: World) -> None:
    leaf = world.make_pck_leaf(serial=77, not_after=NOW - timedelta(days=1))
    with pytest.raises(PckChainError, match="PCK leaf certificate expired"):
        verifier(world).verify(world.quote(leaf=leaf), world.collateral(), now=NOW)
    check(world, world.quote(leaf=leaf), world.collateral(), PckChainError)


def test_pck_crl_of_another_ca_does_not_cover_the_leaf(world: World) -> None:
    other = World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
        root_key=world.root_key,
    )
    other_collateral = other.collateral()
    mixed = replace(
        world.collateral(),
        pck_crl=other_collateral.pck_crl,
        pck_crl_issuer_chain=other_collateral.pck_crl_issuer_chain,
    )
    check(world, world.quote(), mixed, CrlError)


def test_pck_leaf_signed_by_another_key_is_refused(world: World) -> None:
    rogue = World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
        root_key=world.root_key,
        pck_key=world.pck_key,
    )
    # Same CA name, different CA key: the leaf's signature does not verify under world's CA.
    quote = world.quote(leaf=rogue.pck_leaf)
    check(world, quote, world.collateral(), PckChainError)


def test_quote_chain_to_another_root_is_refused(world: World) -> None:
    other = World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
    )
    check(world, other.quote(), world.collateral(), RootCaError)


def test_collateral_chain_to_another_root_is_refused(world: World) -> None:
    other = World(
        real_quote=world.real_quote,
        real_tcb_info=world.real_tcb_info,
        real_qe_identity=world.real_qe_identity,
        real_sgx_extension=world.real_sgx_extension,
        root_key=world.root_key,
    )
    c = other.collateral()
    mixed = replace(
        world.collateral(),
        tcb_info_issuer_chain=c.tcb_info_issuer_chain,
        tcb_info=c.tcb_info,
        tcb_info_signature=c.tcb_info_signature,
    )
    # Same root key and name but another TCB signing key/cert, issued by the same root key:
    # valid. Re-sign the TCB info with a key the chain does not certify instead.
    wrong_sig = replace(mixed, tcb_info_signature=raw_sign(world.att_key, c.tcb_info.encode()))
    check(world, world.quote(), wrong_sig, CollateralSignatureError)


# -- TCB info / collateral matching -----------------------------------------------------------


def test_tcb_info_for_another_fmspc_is_refused(world: World) -> None:
    info = world.tcb_info_dict()
    info["fmspc"] = "00906ED50000"
    check(world, world.quote(), world.collateral(tcb_info=info), CollateralMismatchError)


def test_tcb_info_for_another_pce_id_is_refused(world: World) -> None:
    info = world.tcb_info_dict()
    info["pceId"] = "0100"
    check(
        world,
        world.quote(),
        world.collateral(tcb_info=info),
        CollateralMismatchError,
        agree=False,  # dcap-qvl does not compare the PCE-ID
    )


@pytest.mark.parametrize(("field", "value"), [("id", "SGX"), ("version", 2)])
def test_tcb_info_of_another_kind_is_refused(world: World, field: str, value: Any) -> None:
    info = world.tcb_info_dict()
    info[field] = value
    check(world, world.quote(), world.collateral(tcb_info=info), CollateralFormatError)


def test_qe_identity_of_another_enclave_is_refused(world: World) -> None:
    ident = world.qe_identity_dict()
    ident["id"] = "QE"
    check(world, world.quote(), world.collateral(qe_identity=ident), CollateralFormatError)


def test_unknown_tdx_module_identity_is_refused(world: World) -> None:
    info = world.tcb_info_dict()
    info["tdxModuleIdentities"] = [i for i in info["tdxModuleIdentities"] if i["id"] != "TDX_01"]
    with pytest.raises(TcbLevelError, match="TDX_01"):
        verifier(world).verify(world.quote(), world.collateral(tcb_info=info), now=NOW)


def test_tdx_module_signer_mismatch_is_refused(world: World) -> None:
    with pytest.raises(TcbLevelError, match="MRSIGNER_SEAM"):
        verifier(world).verify(
            world.quote(mr_signer_seam=b"\x01" * 48), world.collateral(), now=NOW
        )


def test_out_of_date_tdx_module_makes_the_status_out_of_date(world: World) -> None:
    info = world.tcb_info_dict()
    for ident in info["tdxModuleIdentities"]:
        ident["tcbLevels"] = [
            {"tcb": {"isvsvn": 0}, "tcbDate": "2020-01-01T00:00:00Z", "tcbStatus": "OutOfDate"}
        ]
    result = verifier(world, accepted_tcb_statuses=None).verify(
        world.quote(), world.collateral(tcb_info=info), now=NOW
    )
    assert result.tcb_status == "OutOfDate"


# -- quote shape and signatures -------------------------------------------------------------


def test_attestation_key_off_the_curve_is_refused(world: World) -> None:
    quote = world.quote(attestation_key=b"\x01" * 64)
    check(world, quote, world.collateral(), QuoteSignatureError)


def test_wrong_attestation_key_type_is_refused(world: World) -> None:
    quote = bytearray(world.quote())
    quote[2] = 3  # header.attestation_key_type: ECDSA-P384
    check(world, bytes(quote), world.collateral(), QuoteParseError)


# -- policy ---------------------------------------------------------------------------------


def test_debug_td_is_refused_unless_allowed(world: World) -> None:
    quote = world.quote(td_attributes=bytes.fromhex("0100001000000000"))
    check(world, quote, world.collateral(), DebugTdRejected)
    result = verifier(world, allow_debug=True).verify(quote, world.collateral(), now=NOW)
    assert result.quote.body.debug


@pytest.mark.parametrize(
    "attributes",
    [
        "0200001000000000",  # bit 1
        "0001001000000000",  # bit 8
        "0000021000000000",  # bit 17
        "0000003000000000",  # bit 29: migratable
        "0000001001000000",  # bit 32
    ],
)
def test_reserved_td_attribute_bits_are_refused(world: World, attributes: str) -> None:
    quote = world.quote(td_attributes=bytes.fromhex(attributes))
    check(world, quote, world.collateral(), TdAttributesRejected)


def test_td_without_sept_ve_disable_is_refused(world: World) -> None:
    quote = world.quote(td_attributes=bytes(8))
    check(world, quote, world.collateral(), TdAttributesRejected)
    result = verifier(world, require_sept_ve_disable=False).verify(
        quote, world.collateral(), now=NOW
    )
    assert result.tcb_status == "UpToDate"


def test_mrtd_allowlist(world: World) -> None:
    quote, collateral = world.quote(), world.collateral()
    mr_td = world.real_quote.body.mr_td
    assert verifier(world, mrtd_allowlist=frozenset({mr_td})).verify(quote, collateral, now=NOW)
    with pytest.raises(MeasurementRejected, match="MRTD"):
        verifier(world, mrtd_allowlist=frozenset({bytes(48)})).verify(quote, collateral, now=NOW)


def test_rtmr_allowlist(world: World) -> None:
    quote, collateral = world.quote(), world.collateral()
    rtmr2 = world.real_quote.body.rtmr2
    ok = verifier(world, rtmr_allowlist=(None, None, frozenset({rtmr2})))
    assert ok.verify(quote, collateral, now=NOW).tcb_status == "UpToDate"
    bad = verifier(world, rtmr_allowlist=(None, frozenset({bytes(48)})))
    with pytest.raises(MeasurementRejected, match="RTMR1"):
        bad.verify(quote, collateral, now=NOW)


def test_td_feature_bits_are_accepted(world: World) -> None:
    features = sum(1 << b for b in (16, 18, 19, 20, 21, 22, 27, 28, 30, 31, 62, 63))
    quote = world.quote(td_attributes=features.to_bytes(8, "little"))
    check(world, quote, world.collateral(), None)


def test_sept_ve_disable_constant_matches_the_real_vector(world: World) -> None:
    assert world.real_quote.body.td_attributes == SEPT_VE_DISABLE
