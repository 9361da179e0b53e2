"""Every real TDX quote in tests/vectors parsed by tdx_quote and by dcap-qvl (the reference), field
for field, and verified by both where its collateral is recorded.

The quotes come from many platforms (tests/vectors/NOTICE): v4 and v5 quotes, TD reports 1.0 and
1.5 (TDX 1.5 modules), Sapphire, Emerald and Granite Rapids, Google Cloud's and another 8,000-byte
buffer, Azure, Alibaba Cloud. A missing vector fails (`MissingVectorError`), never skips.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tdx_ppid import parse_sgx_extension, pck_chain_from_quote
from tdx_quote import (
    BodyType,
    CertificationDataType,
    Quote,
    QuoteFormatError,
    TdReport10,
    TdReport15,
    build_quote,
    build_td_report,
    parse_quote,
)
from tdx_verify import (
    Collateral,
    CollateralExpiredError,
    Policy,
    TcbLevelError,
    TdAttributesRejected,
    VerificationError,
    VerifiedQuote,
    Verifier,
)
from tests.vectors import (
    AUTOMATA_8000_QUOTE,
    INTEL_COLLATERAL,
    INTEL_QUOTE,
    OUTDATED_V5_COLLATERAL,
    OUTDATED_V5_QUOTE,
    REAL_QUOTES,
    SPR_E4_QUOTE,
    ZKDCAP_PCK_CRL,
    ZKDCAP_QE_IDENTITY,
    ZKDCAP_QUOTE,
    ZKDCAP_ROOT_CA_CRL,
    ZKDCAP_TCB_INFO,
    ZKDCAP_TCB_SIGNING_CERT,
    read_quote_vector,
    read_vector,
)

# The one quote whose file has non-zero bytes after it: go-tdx-guest's test appendix. tdx_quote
# refuses them (README: "non-zero bytes after the quote"); dcap-qvl ignores them.
SPR_E4_QUOTE_SIZE = 4935
SPR_E4_APPENDIX = b"\nextra bytes(only for testing purpose)\n"

# What each quote is, as NOTICE says: (version, body type, FMSPC, bytes of zero padding).
EXPECTED: dict[str, tuple[int, BodyType, str, int]] = {
    INTEL_QUOTE: (4, BodyType.TD_REPORT_10, "B0C06F000000", 70),
    "gcp_cos113_quote.bin": (4, BodyType.TD_REPORT_10, "00806F050000", 3065),
    "trustee_tdx_quote_4.bin": (4, BodyType.TD_REPORT_10, "50806F000000", 0),
    "trustee_tdx_quote_5.bin": (5, BodyType.TD_REPORT_15, "90C06F000000", 0),
    "trustee_tdx_quote_6.bin": (4, BodyType.TD_REPORT_10, "00A06D080000", 70),
    "trustee_azure_td_quote.bin": (4, BodyType.TD_REPORT_10, "00806F050000", 70),
    SPR_E4_QUOTE: (4, BodyType.TD_REPORT_10, "50806F000000", 0),
    "gotdx_quote_v5.bin": (5, BodyType.TD_REPORT_15, "90C06F000000", 0),
    OUTDATED_V5_QUOTE: (5, BodyType.TD_REPORT_15, "90C06F000000", 0),
    "dcapqvl_tappd_quote.hex": (4, BodyType.TD_REPORT_10, "B0C06F000000", 70),
    "dcapqvl_tdx_quote.hex": (4, BodyType.TD_REPORT_10, "B0C06F000000", 70),
    "automata_alibaba_quote_v5.bin": (5, BodyType.TD_REPORT_15, "90C06F000000", 0),
    AUTOMATA_8000_QUOTE: (4, BodyType.TD_REPORT_10, "00806F050000", 3065),
    "openenclave_tdx_quote_v4.bin": (4, BodyType.TD_REPORT_10, "50806F000000", 0),
    "openenclave_tdx_quote_v5.bin": (5, BodyType.TD_REPORT_15, "00806F050000", 0),
    "openenclave_tdx_quote_v5_seamldr5.bin": (5, BodyType.TD_REPORT_15, "90C06F000000", 0),
    ZKDCAP_QUOTE: (4, BodyType.TD_REPORT_10, "00806F050000", 0),
}

HEADER_FIELDS = (
    "version",
    "attestation_key_type",
    "tee_type",
    "qe_svn",
    "pce_svn",
    "qe_vendor_id",
    "user_data",
)
# tdx_quote's name -> dcap-qvl's, for every field of a TD report 1.0; 1.5 adds two.
TD10_FIELDS = {
    "tee_tcb_svn": "tee_tcb_svn",
    "mr_seam": "mr_seam",
    "mr_signer_seam": "mr_signer_seam",
    "seam_attributes": "seam_attributes",
    "td_attributes": "td_attributes",
    "xfam": "xfam",
    "mr_td": "mr_td",
    "mr_config_id": "mr_config_id",
    "mr_owner": "mr_owner",
    "mr_owner_config": "mr_owner_config",
    "rtmr0": "rt_mr0",
    "rtmr1": "rt_mr1",
    "rtmr2": "rt_mr2",
    "rtmr3": "rt_mr3",
    "report_data": "report_data",
}
TD15_FIELDS = {**TD10_FIELDS, "tee_tcb_svn2": "tee_tcb_svn2", "mr_service_td": "mr_service_td"}
BODY_SIZE = {BodyType.TD_REPORT_10: 584, BodyType.TD_REPORT_15: 648}
HEADER_SIZE = 48


def test_the_expectations_name_every_real_quote() -> None:
    assert set(EXPECTED) == set(REAL_QUOTES)


def quote_bytes(name: str) -> bytes:
    """The quote of vector `name` as both parsers read it: the SPR E4 file without its appendix
    (checked here to be exactly go-tdx-guest's text, so nothing else is cut)."""
    raw = read_quote_vector(name)
    if name == SPR_E4_QUOTE:
        assert raw[SPR_E4_QUOTE_SIZE:] == SPR_E4_APPENDIX
        return raw[:SPR_E4_QUOTE_SIZE]
    return raw


def ours(name: str) -> Quote:
    return parse_quote(quote_bytes(name), allow_zero_padding=True)


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_real_quote_header_is_parsed_as_dcap_qvl_parses_it(name: str) -> None:
    quote = ours(name)
    ref = dcap_qvl.parse_quote(quote_bytes(name))
    assert ref.is_tdx() and not ref.is_sgx()
    for field in HEADER_FIELDS:
        assert getattr(quote.header, field) == getattr(ref.header, field), field
    version, _, _, _ = EXPECTED[name]
    assert quote.header.version == version


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_real_quote_body_is_parsed_field_for_field_as_dcap_qvl_parses_it(name: str) -> None:
    raw = quote_bytes(name)
    quote = ours(name)
    ref = dcap_qvl.parse_quote(raw)
    version, body_type, _, _ = EXPECTED[name]
    assert quote.body_type == body_type
    if body_type == BodyType.TD_REPORT_15:
        assert type(quote.body) is TdReport15
        assert type(ref.report) is dcap_qvl.TdReport15
        fields = TD15_FIELDS
    else:
        assert type(quote.body) is TdReport10
        assert type(ref.report) is dcap_qvl.TdReport10
        fields = TD10_FIELDS
    for mine, theirs in fields.items():
        assert getattr(quote.body, mine) == getattr(ref.report, theirs), mine
    # The body's bytes where the quote has them: after the header, and in a v5 quote after its
    # body type (u16) and body size (u32) fields, which must say what the body is.
    body = build_td_report(quote.body)
    assert len(body) == BODY_SIZE[body_type]
    start = HEADER_SIZE
    if version == 5:
        assert int.from_bytes(raw[48:50], "little") == body_type
        assert int.from_bytes(raw[50:54], "little") == len(body)
        start += 6
    assert raw[start : start + len(body)] == body


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_real_quote_pck_chain_and_extension_are_read_as_dcap_qvl_reads_them(name: str) -> None:
    quote = ours(name)
    ref = dcap_qvl.parse_quote(quote_bytes(name))
    outer = quote.signature_data.certification_data
    assert outer.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA
    nested = quote.qe_report_cert_data.certification_data
    assert nested.cert_type == CertificationDataType.PCK_CERT_CHAIN
    assert isinstance(nested.body, bytes)
    chain_pem = ref.cert_chain_pem_bytes()
    assert chain_pem is not None
    assert nested.body.rstrip(b"\0") == chain_pem.rstrip(b"\0")
    assert ref.ca() == "platform"
    _, _, fmspc, _ = EXPECTED[name]
    assert ref.fmspc() == fmspc
    ext = parse_sgx_extension(pck_chain_from_quote(quote)[0])
    theirs = ref.pck_extension()
    assert theirs is not None
    assert ext.fmspc.hex().upper() == fmspc
    assert (ext.ppid, ext.cpu_svn, ext.pce_svn, ext.pce_id, ext.fmspc, ext.sgx_type) == (
        theirs.ppid,
        theirs.cpu_svn,
        theirs.pce_svn,
        theirs.pce_id,
        theirs.fmspc,
        theirs.sgx_type,
    )
    assert ext.platform_instance_id == theirs.platform_instance_id


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_real_quote_rebuilds_to_its_own_bytes_with_only_zero_padding_left(name: str) -> None:
    raw = quote_bytes(name)
    rebuilt = build_quote(ours(name))
    _, _, _, padding = EXPECTED[name]
    assert len(raw) - len(rebuilt) == padding
    assert rebuilt + bytes(padding) == raw


def test_the_spr_e4_quote_with_its_appendix_is_refused_by_tdx_quote_only() -> None:
    """README: tdx-verify (and tdx_quote) refuse non-zero bytes after the quote, by design;
    dcap-qvl reads the quote and ignores what follows it."""
    raw = read_quote_vector(SPR_E4_QUOTE)
    with pytest.raises(QuoteFormatError) as info:
        parse_quote(raw, allow_zero_padding=True)
    assert info.value.field == "trailing_data"
    assert f"{len(SPR_E4_APPENDIX)} bytes" in info.value.reason
    assert dcap_qvl.parse_quote(raw).report.mr_td == ours(SPR_E4_QUOTE).body.mr_td


# -- verification where the collateral is recorded -------------------------------------------------

ANY_STATUS = Policy(accepted_tcb_statuses=None)
INTEL_NOW = 1752919234  # 2025-07-19T10:00:34Z, inside the Intel vector's collateral window
OUTDATED_NOW = 1771459200  # 2026-02-19T00:00:00Z, inside the v5 vector's collateral window
OUTDATED_AFTER = 1774051200  # 2026-03-21T00:00:00Z, after its TCB info and PCK CRL expired


def verdicts(quote_name: str, text: str, ts: int) -> tuple[VerifiedQuote | VerificationError, Any]:
    """(tdx-verify's result or error, dcap-qvl's report or error) on the quote vector
    `quote_name` and the collateral `text` (QuoteCollateralV3 JSON) at `ts`, Intel's root."""
    raw = read_quote_vector(quote_name)
    mine: VerifiedQuote | VerificationError
    theirs: Any  # a dcap_qvl.VerifiedReport, or the ValueError it raised
    try:
        mine = Verifier(policy=ANY_STATUS).verify(
            raw, Collateral.from_json(text), now=datetime.fromtimestamp(ts, UTC)
        )
    except VerificationError as exc:
        mine = exc
    try:
        theirs = dcap_qvl.verify(raw, dcap_qvl.QuoteCollateralV3.from_json(text), ts)
    except ValueError as exc:
        theirs = exc
    return mine, theirs


def test_the_intel_quote_verifies_as_dcap_qvl_verifies_it_with_every_report_field() -> None:
    mine, theirs = verdicts(INTEL_QUOTE, read_vector(INTEL_COLLATERAL).decode(), INTEL_NOW)
    assert isinstance(mine, VerifiedQuote), mine
    assert not isinstance(theirs, ValueError), theirs
    assert (mine.tcb_status, list(mine.advisory_ids)) == (theirs.status, theirs.advisory_ids)
    assert mine.tcb_status == "UpToDate"
    assert mine.ppid.value == bytes(theirs.ppid)
    report = json.loads(theirs.to_json())["report"]["TD10"]
    body = mine.quote.body
    for field, ref_field in TD10_FIELDS.items():
        assert getattr(body, field).hex() == report[ref_field], field


def test_the_v5_quote_is_refused_by_both_at_its_tcb_level_inside_its_window() -> None:
    """dcap-qvl's own test verifies this quote only with a TCB override: no level of its TCB info
    matches the platform. Both say so inside the collateral window."""
    mine, theirs = verdicts(
        OUTDATED_V5_QUOTE, read_vector(OUTDATED_V5_COLLATERAL).decode(), OUTDATED_NOW
    )
    assert isinstance(mine, TcbLevelError), mine
    assert "no TCB level" in mine.reason
    assert isinstance(theirs, ValueError)
    assert "No matching TCB level" in str(theirs)


def test_the_v5_quote_is_refused_by_both_after_its_collateral_expired() -> None:
    mine, theirs = verdicts(
        OUTDATED_V5_QUOTE, read_vector(OUTDATED_V5_COLLATERAL).decode(), OUTDATED_AFTER
    )
    assert isinstance(mine, CollateralExpiredError), mine
    assert "expired at" in mine.reason
    assert isinstance(theirs, ValueError)


# -- Intel's collateral for FMSPC 00806F050000, shipped in the pieces PCS serves -----------------

ZKDCAP_INSIDE = 1738000000  # 2025-01-27T17:46:40Z: TCB info, QE identity and both CRLs valid
ZKDCAP_AFTER = 1740096000  # 2025-02-21T00:00:00Z: the TCB info and the PCK CRL have expired
ZKDCAP_ADVISORIES = ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]


def signed_body(document: str, key: str) -> tuple[str, str]:
    """The exact text of `key`'s object in a PCS answer `{"<key>":{...},"signature":"hex"}`
    (what the signature covers, byte for byte) and the signature."""
    prefix = '{"' + key + '":'
    suffix_at = document.rindex(',"signature":"')
    assert document.startswith(prefix) and document.endswith('"}')
    body = document[len(prefix) : suffix_at]
    assert json.loads(body) == json.loads(document)[key]
    return body, json.loads(document)["signature"]


def zkdcap_collateral(quote_name: str) -> str:
    """The shipped pieces as one QuoteCollateralV3: the issuer chains end with the PCK Platform
    CA and the root copy of the quote's own PCK chain (the same certificates Intel serves)."""
    chain = pck_chain_from_quote(
        parse_quote(read_quote_vector(quote_name), allow_zero_padding=True)
    )
    platform_ca, root = (c.public_bytes(Encoding.PEM).decode() for c in chain[1:3])
    signer = read_vector(ZKDCAP_TCB_SIGNING_CERT).decode()
    tcb_info, tcb_signature = signed_body(read_vector(ZKDCAP_TCB_INFO).decode(), "tcbInfo")
    qe_identity, qe_signature = signed_body(
        read_vector(ZKDCAP_QE_IDENTITY).decode(), "enclaveIdentity"
    )
    return json.dumps(
        {
            "pck_crl_issuer_chain": platform_ca + root,
            "root_ca_crl": read_vector(ZKDCAP_ROOT_CA_CRL).hex(),
            "pck_crl": read_vector(ZKDCAP_PCK_CRL).hex(),
            "tcb_info_issuer_chain": signer + root,
            "tcb_info": tcb_info,
            "tcb_info_signature": tcb_signature,
            "qe_identity_issuer_chain": signer + root,
            "qe_identity": qe_identity,
            "qe_identity_signature": qe_signature,
        }
    )


def test_the_8000_byte_quote_verifies_out_of_date_as_dcap_qvl_verifies_it() -> None:
    text = zkdcap_collateral(AUTOMATA_8000_QUOTE)
    mine, theirs = verdicts(AUTOMATA_8000_QUOTE, text, ZKDCAP_INSIDE)
    assert isinstance(mine, VerifiedQuote), mine
    assert not isinstance(theirs, ValueError), theirs
    assert (theirs.status, theirs.advisory_ids) == ("OutOfDate", ZKDCAP_ADVISORIES)
    assert (mine.tcb_status, list(mine.advisory_ids)) == ("OutOfDate", ZKDCAP_ADVISORIES)
    assert mine.ppid.value == bytes(theirs.ppid)
    report = json.loads(theirs.to_json())["report"]["TD10"]
    for field, ref_field in TD10_FIELDS.items():
        assert getattr(mine.quote.body, field).hex() == report[ref_field], field


def test_the_8000_byte_quote_is_refused_by_both_after_its_collateral_expired() -> None:
    text = zkdcap_collateral(AUTOMATA_8000_QUOTE)
    mine, theirs = verdicts(AUTOMATA_8000_QUOTE, text, ZKDCAP_AFTER)
    assert isinstance(mine, CollateralExpiredError), mine
    assert isinstance(theirs, ValueError)


def test_the_zkdcap_quote_is_refused_by_both_for_its_td_attributes() -> None:
    """The same FMSPC and collateral; its TD runs without SEPT_VE_DISABLE, which both refuse."""
    text = zkdcap_collateral(ZKDCAP_QUOTE)
    mine, theirs = verdicts(ZKDCAP_QUOTE, text, ZKDCAP_INSIDE)
    assert isinstance(mine, TdAttributesRejected), mine
    assert "SEPT_VE_DISABLE" in mine.reason
    assert isinstance(theirs, ValueError)
    assert "SEPT_VE_DISABLE" in str(theirs)
