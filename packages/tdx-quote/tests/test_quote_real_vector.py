"""The real Intel TDX v4 quote from tests/vectors: parsed, compared with dcap-qvl, rebuilt."""

from __future__ import annotations

import dcap_qvl
import pytest

from tdx_quote import (
    BodyType,
    CertificationDataType,
    QuoteFormatError,
    TeeType,
    build_enclave_report,
    build_quote,
    build_signed_region,
    build_td_report,
    parse_enclave_report,
    parse_quote,
)

REAL_QUOTE_SIZE = 4936  # the quote proper; 70 zero bytes of padding follow it in the file


def test_real_quote_with_zero_padding_is_refused_by_default(real_quote_file: bytes) -> None:
    with pytest.raises(QuoteFormatError) as info:
        parse_quote(real_quote_file)
    assert info.value.field == "trailing_data"
    assert "70 bytes" in info.value.reason


def test_real_quote_parses_with_zero_padding_allowed(real_quote_file: bytes) -> None:
    quote = parse_quote(real_quote_file, allow_zero_padding=True)
    assert quote.header.version == 4
    assert quote.header.tee_type == TeeType.TDX
    assert quote.body_type == BodyType.TD_REPORT_10
    cert = quote.signature_data.certification_data
    assert cert.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA
    nested = quote.qe_report_cert_data.certification_data
    assert nested.cert_type == CertificationDataType.PCK_CERT_CHAIN
    assert isinstance(nested.body, bytes)
    assert nested.body.count(b"-----BEGIN CERTIFICATE-----") == 3


def test_real_quote_without_padding_parses_strictly(real_quote: bytes) -> None:
    assert parse_quote(real_quote) == parse_quote(real_quote + bytes(70), allow_zero_padding=True)


def test_real_quote_fields_agree_with_dcap_qvl(real_quote_file: bytes) -> None:
    ours = parse_quote(real_quote_file, allow_zero_padding=True)
    ref = dcap_qvl.parse_quote(real_quote_file)
    assert ref.is_tdx()
    for name in (
        "version",
        "attestation_key_type",
        "tee_type",
        "qe_svn",
        "pce_svn",
        "qe_vendor_id",
        "user_data",
    ):
        assert getattr(ours.header, name) == getattr(ref.header, name), name
    report_names = {f"rtmr{i}": f"rt_mr{i}" for i in range(4)}
    for name in (
        "tee_tcb_svn",
        "mr_seam",
        "mr_signer_seam",
        "seam_attributes",
        "td_attributes",
        "xfam",
        "mr_td",
        "mr_config_id",
        "mr_owner",
        "mr_owner_config",
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "report_data",
    ):
        ref_value = getattr(ref.report, report_names.get(name, name))
        assert getattr(ours.body, name) == ref_value, name
    # dcap-qvl returns the PEM chain without the NUL terminator real quotes carry.
    chain = ours.qe_report_cert_data.certification_data.body
    assert isinstance(chain, bytes)
    assert chain.rstrip(b"\0") == ref.cert_chain_pem_bytes()


def test_real_quote_rebuilds_to_the_same_bytes(real_quote_file: bytes, real_quote: bytes) -> None:
    quote = parse_quote(real_quote_file, allow_zero_padding=True)
    assert build_quote(quote) == real_quote
    assert build_quote(quote) + bytes(len(real_quote_file) - REAL_QUOTE_SIZE) == real_quote_file


def test_real_quote_signed_region_is_header_and_body(real_quote: bytes) -> None:
    quote = parse_quote(real_quote)
    assert quote.signed_bytes == real_quote[: 48 + 584]
    assert build_signed_region(quote.header, quote.body_type, quote.body) == quote.signed_bytes
    assert build_td_report(quote.body) == real_quote[48 : 48 + 584]


def test_real_qe_report_rebuilds_to_the_signed_bytes(real_quote: bytes) -> None:
    quote = parse_quote(real_quote)
    # v4: header 48, body 584, signature data length 4, signature 64, attestation key 64,
    # certification data type 2 and size 4: the QE report starts at 770.
    qe_report_bytes = real_quote[770 : 770 + 384]
    qe_report = quote.qe_report_cert_data.qe_report
    assert build_enclave_report(qe_report) == qe_report_bytes
    assert parse_enclave_report(qe_report_bytes) == qe_report


def test_every_truncation_of_the_real_quote_is_refused(real_quote: bytes) -> None:
    for cut in range(REAL_QUOTE_SIZE):
        with pytest.raises(QuoteFormatError) as info:
            parse_quote(real_quote[:cut])
        field = info.value.field
        if cut < 632:
            assert field.startswith(("header.", "body.")), (cut, field)
        else:
            assert field == "signature_data.size", (cut, field)


def test_nonzero_byte_in_the_padding_is_refused(real_quote_file: bytes) -> None:
    padded = real_quote_file[:-1] + b"\x01"
    with pytest.raises(QuoteFormatError) as info:
        parse_quote(padded, allow_zero_padding=True)
    assert info.value.field == "trailing_data"
