"""Example tests: every certification data type, v4 and v5 layouts, and every reject path."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from quote_strategies import (
    PPID_SIZES,
    sample_cert_data,
    sample_enclave_report,
    sample_header,
    sample_quote,
    sample_td_report_10,
    sample_td_report_15,
)

from tdx_quote import (
    MAX_QUOTE_SIZE,
    BodyType,
    CertificationData,
    EnclaveReport,
    Header,
    PpidCertData,
    QeReportCertData,
    Quote,
    QuoteFormatError,
    QuoteSignatureData,
    TdReport10,
    TdReport15,
    _layout,
    build_enclave_report,
    build_quote,
    build_signed_region,
    build_td_report,
    parse_enclave_report,
    parse_quote,
)

# v4 offsets: header 0..48, body 48..632, signature data length at 632, signature data at 636.
SIG_LEN_AT = 632
CERT_TYPE_AT = 636 + 64 + 64
CERT_SIZE_AT = CERT_TYPE_AT + 2
CERT_BODY_AT = CERT_SIZE_AT + 4
# Inside type 6 (sample: 32 bytes of QE auth data):
QE_AUTH_SIZE_AT = CERT_BODY_AT + 384 + 64
NESTED_TYPE_AT = QE_AUTH_SIZE_AT + 2 + 32
NESTED_SIZE_AT = NESTED_TYPE_AT + 2


def put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def get(data: bytes, offset: int, fmt: str) -> int:
    return int(struct.unpack_from(fmt, data, offset)[0])


def refused(data: bytes, **kwargs: bool) -> QuoteFormatError:
    with pytest.raises(QuoteFormatError) as info:
        parse_quote(data, **kwargs)
    return info.value


def unsigned(quote: Quote) -> Quote:
    return dataclasses.replace(quote, signed_bytes=b"")


# --- accepted shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize(
    ("version", "body_type"),
    [(4, BodyType.TD_REPORT_10), (5, BodyType.TD_REPORT_10), (5, BodyType.TD_REPORT_15)],
)
def test_each_layout_and_cert_type_round_trips(
    version: int, body_type: int, cert_type: int
) -> None:
    quote = sample_quote(version, body_type, cert_type)
    raw = build_quote(quote)
    parsed = parse_quote(raw)
    assert unsigned(parsed) == quote
    assert build_quote(parsed) == raw
    assert parsed.signed_bytes == build_signed_region(quote.header, body_type, quote.body)


def test_v4_layout_sizes() -> None:
    raw = build_quote(sample_quote(4, BodyType.TD_REPORT_10, 5))
    assert get(raw, 0, "<H") == 4
    assert get(raw, 4, "<I") == 0x81
    assert raw[48:632] == build_td_report(sample_td_report_10())
    assert get(raw, SIG_LEN_AT, "<I") == len(raw) - 636
    assert parse_quote(raw).signed_bytes == raw[:632]


@pytest.mark.parametrize(
    ("body_type", "size"), [(BodyType.TD_REPORT_10, 584), (BodyType.TD_REPORT_15, 648)]
)
def test_v5_layout_has_body_descriptor(body_type: int, size: int) -> None:
    quote = sample_quote(5, body_type, 5)
    raw = build_quote(quote)
    assert get(raw, 48, "<H") == body_type
    assert get(raw, 50, "<I") == size
    assert raw[54 : 54 + size] == build_td_report(quote.body)
    assert parse_quote(raw).signed_bytes == raw[: 54 + size]


def test_td_report_sizes() -> None:
    assert len(build_td_report(sample_td_report_10())) == 584
    assert len(build_td_report(sample_td_report_15())) == 648


def test_td_report_15_extends_10() -> None:
    assert build_td_report(sample_td_report_15())[:584] == build_td_report(sample_td_report_10())


@pytest.mark.parametrize(("cert_type", "ppid_size"), sorted(PPID_SIZES.items()))
def test_ppid_cert_data_layout(cert_type: int, ppid_size: int) -> None:
    raw = build_quote(sample_quote(4, BodyType.TD_REPORT_10, cert_type))
    assert get(raw, CERT_TYPE_AT, "<H") == cert_type
    assert get(raw, CERT_SIZE_AT, "<I") == ppid_size + 16 + 2 + 2
    body = parse_quote(raw).signature_data.certification_data.body
    assert isinstance(body, PpidCertData)
    assert len(body.ppid) == ppid_size


def test_qe_report_cert_data_layout() -> None:
    quote = sample_quote(4, BodyType.TD_REPORT_10, 6)
    raw = build_quote(quote)
    assert raw[CERT_BODY_AT : CERT_BODY_AT + 384] == build_enclave_report(sample_enclave_report())
    assert get(raw, QE_AUTH_SIZE_AT, "<H") == 32
    assert get(raw, NESTED_TYPE_AT, "<H") == 5
    assert get(raw, NESTED_SIZE_AT, "<I") == len(raw) - NESTED_SIZE_AT - 4
    assert get(raw, CERT_SIZE_AT, "<I") == len(raw) - CERT_BODY_AT


def test_enclave_report_round_trips() -> None:
    raw = build_enclave_report(sample_enclave_report())
    assert len(raw) == 384
    assert parse_enclave_report(raw) == sample_enclave_report()


@pytest.mark.parametrize("size", [0, 383, 385])
def test_enclave_report_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(QuoteFormatError) as info:
        parse_enclave_report(bytes(size))
    assert info.value.field == "enclave_report"


def test_zero_padding_is_accepted_only_when_allowed() -> None:
    raw = build_quote(sample_quote())
    assert refused(raw + bytes(10)).field == "trailing_data"
    assert unsigned(parse_quote(raw + bytes(10), allow_zero_padding=True)) == sample_quote()


def test_qe_report_cert_data_property_refuses_other_types() -> None:
    with pytest.raises(QuoteFormatError):
        _ = sample_quote(cert_type=5).qe_report_cert_data
    assert isinstance(sample_quote(cert_type=6).qe_report_cert_data, QeReportCertData)


# --- parse rejects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "body_type", "cert_type"),
    [(4, BodyType.TD_REPORT_10, 6), (5, BodyType.TD_REPORT_15, 1), (5, BodyType.TD_REPORT_10, 7)],
)
def test_every_truncation_is_refused(version: int, body_type: int, cert_type: int) -> None:
    raw = build_quote(sample_quote(version, body_type, cert_type))
    for cut in range(len(raw)):
        error = refused(raw[:cut])
        assert error.field, cut


@pytest.mark.parametrize(
    ("cut", "field"),
    [
        (0, "header.version"),
        (3, "header.attestation_key_type"),
        (6, "header.tee_type"),
        (9, "header.qe_svn"),
        (11, "header.pce_svn"),
        (20, "header.qe_vendor_id"),
        (30, "header.user_data"),
        (48, "body.tee_tcb_svn"),
        (100, "body.mr_seam"),
        (620, "body.report_data"),
        (633, "signature_data.size"),
        (700, "signature_data.size"),
    ],
)
def test_truncation_names_the_field(cut: int, field: str) -> None:
    raw = build_quote(sample_quote())
    error = refused(raw[:cut])
    assert error.field == field
    assert "truncated" in error.reason or "declares" in error.reason


@pytest.mark.parametrize(
    ("cut", "field"),
    [(49, "body_type"), (52, "body.size"), (100, "body.size")],
)
def test_v5_truncation_names_the_field(cut: int, field: str) -> None:
    raw = build_quote(sample_quote(5, BodyType.TD_REPORT_15, 5))
    assert refused(raw[:cut]).field == field


@pytest.mark.parametrize("version", [0, 3, 6, 0xFFFF])
def test_unknown_version_is_refused(version: int) -> None:
    error = refused(put(build_quote(sample_quote()), 0, "<H", version))
    assert error.field == "header.version"
    assert "unsupported quote version" in error.reason


@pytest.mark.parametrize("tee_type", [0x00, 0x80, 0x82, 0x81000000])
def test_non_tdx_tee_type_is_refused(tee_type: int) -> None:
    error = refused(put(build_quote(sample_quote()), 4, "<I", tee_type))
    assert error.field == "header.tee_type"


@pytest.mark.parametrize("key_type", [0, 1, 3, 4])
def test_unsupported_attestation_key_type_is_refused(key_type: int) -> None:
    error = refused(put(build_quote(sample_quote()), 2, "<H", key_type))
    assert error.field == "header.attestation_key_type"


@pytest.mark.parametrize("body_type", [0, 1, 4, 0xFFFF])
def test_unknown_v5_body_type_is_refused(body_type: int) -> None:
    raw = build_quote(sample_quote(5, BodyType.TD_REPORT_10, 5))
    assert refused(put(raw, 48, "<H", body_type)).field == "body_type"


@pytest.mark.parametrize(
    ("body_type", "declared"),
    [
        (BodyType.TD_REPORT_10, 583),
        (BodyType.TD_REPORT_10, 585),
        (BodyType.TD_REPORT_15, 584),
        (BodyType.TD_REPORT_15, 649),
    ],
)
def test_v5_body_size_must_match_the_body_type(body_type: int, declared: int) -> None:
    raw = build_quote(sample_quote(5, body_type, 5))
    error = refused(put(raw, 50, "<I", declared))
    assert error.field.startswith("body."), error.field


def test_v5_body_type_swapped_with_a_body_of_the_other_size_is_refused() -> None:
    raw = build_quote(sample_quote(5, BodyType.TD_REPORT_15, 5))
    assert refused(put(raw, 48, "<H", BodyType.TD_REPORT_10)).field == "body.size"


@pytest.mark.parametrize("delta", [-1, 1, 1000, -200])
def test_signature_data_length_must_match(delta: int) -> None:
    raw = build_quote(sample_quote())
    declared = get(raw, SIG_LEN_AT, "<I") + delta
    error = refused(put(raw, SIG_LEN_AT, "<I", declared))
    # Too short a length leaves the inner size pointing past the end: either size is named.
    assert error.field in {"signature_data.size", "signature_data.certification_data.body.size"}
    assert "declare" in error.reason


def test_signature_data_length_of_four_gigabytes_is_refused() -> None:
    raw = build_quote(sample_quote())
    assert refused(put(raw, SIG_LEN_AT, "<I", 0xFFFFFFFF)).field == "signature_data.size"


@pytest.mark.parametrize("delta", [-1, 1])
def test_certification_data_size_must_match(delta: int) -> None:
    raw = build_quote(sample_quote(cert_type=5))
    declared = get(raw, CERT_SIZE_AT, "<I") + delta
    error = refused(put(raw, CERT_SIZE_AT, "<I", declared))
    assert error.field.startswith("signature_data"), error.field
    assert error.field.endswith("size"), error.field


@pytest.mark.parametrize(("cert_type", "ppid_size"), sorted(PPID_SIZES.items()))
@pytest.mark.parametrize("delta", [-1, 1])
def test_ppid_size_must_match_the_cert_type(cert_type: int, ppid_size: int, delta: int) -> None:
    """A PPID one byte off its type's length is refused, the enclosing sizes kept consistent."""
    quote = sample_quote(cert_type=cert_type)
    raw = bytearray(build_quote(quote))
    if delta > 0:
        raw[CERT_BODY_AT:CERT_BODY_AT] = b"\xaa"
    else:
        del raw[CERT_BODY_AT]
    data = put(bytes(raw), CERT_SIZE_AT, "<I", ppid_size + 20 + delta)
    data = put(data, SIG_LEN_AT, "<I", get(data, SIG_LEN_AT, "<I") + delta)
    error = refused(data)
    if delta > 0:
        assert error.field == "signature_data.certification_data.body.size"
    else:
        assert error.field == "signature_data.certification_data.body.pce_id"
        assert "truncated" in error.reason


@pytest.mark.parametrize("ppid_type", [1, 2])
def test_ppid_type_relabelled_to_another_size_is_refused(ppid_type: int) -> None:
    raw = build_quote(sample_quote(cert_type=ppid_type))
    error = refused(put(raw, CERT_TYPE_AT, "<H", ppid_type + 1))
    assert error.field.startswith("signature_data.certification_data.body"), error.field


@pytest.mark.parametrize("cert_type", [0, 8, 0xFFFF])
def test_unknown_certification_data_type_is_refused(cert_type: int) -> None:
    raw = build_quote(sample_quote(cert_type=5))
    error = refused(put(raw, CERT_TYPE_AT, "<H", cert_type))
    assert error.field == "signature_data.certification_data.cert_type"
    assert "unsupported certification data type" in error.reason


@pytest.mark.parametrize("nested", [0, 6, 8])
def test_nested_certification_data_type_is_checked(nested: int) -> None:
    raw = build_quote(sample_quote(cert_type=6))
    error = refused(put(raw, NESTED_TYPE_AT, "<H", nested))
    assert error.field == "signature_data.certification_data.body.certification_data.cert_type"


@pytest.mark.parametrize("delta", [-1, 1])
def test_nested_certification_data_size_must_match(delta: int) -> None:
    raw = build_quote(sample_quote(cert_type=6))
    declared = get(raw, NESTED_SIZE_AT, "<I") + delta
    error = refused(put(raw, NESTED_SIZE_AT, "<I", declared))
    assert error.field in {
        "signature_data.certification_data.body.certification_data.body.size",
        "signature_data.certification_data.body.size",
    }


@pytest.mark.parametrize("declared", [0, 31, 33, 0xFFFF])
def test_qe_auth_data_size_must_match(declared: int) -> None:
    raw = build_quote(sample_quote(cert_type=6))
    error = refused(put(raw, QE_AUTH_SIZE_AT, "<H", declared))
    assert error.field.startswith("signature_data.certification_data.body."), error.field


def test_nonzero_trailing_data_is_refused_even_with_padding_allowed() -> None:
    raw = build_quote(sample_quote())
    error = refused(raw + b"\x00\x00\x01", allow_zero_padding=True)
    assert error.field == "trailing_data"


def test_oversized_input_is_refused_before_parsing() -> None:
    raw = build_quote(sample_quote())
    error = refused(raw + bytes(MAX_QUOTE_SIZE), allow_zero_padding=True)
    assert error.field == "quote"
    assert "limit" in error.reason


@pytest.mark.parametrize("value", ["text", None, 42, [1, 2]])
def test_non_bytes_input_is_refused(value: object) -> None:
    with pytest.raises(QuoteFormatError):
        parse_quote(value)  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted() -> None:
    raw = build_quote(sample_quote())
    assert parse_quote(bytearray(raw)) == parse_quote(raw)  # type: ignore[arg-type]
    assert parse_quote(memoryview(raw)) == parse_quote(raw)  # type: ignore[arg-type]


# --- build rejects ---------------------------------------------------------------------------


def build_refused(quote: Quote) -> QuoteFormatError:
    with pytest.raises(QuoteFormatError) as info:
        build_quote(quote)
    return info.value


def test_build_refuses_a_v4_quote_with_td_report_15() -> None:
    quote = dataclasses.replace(sample_quote(5, BodyType.TD_REPORT_15), header=sample_header(4))
    assert build_refused(quote).field == "body_type"


def test_build_refuses_body_type_that_disagrees_with_the_body() -> None:
    quote = dataclasses.replace(sample_quote(5, BodyType.TD_REPORT_10), body=sample_td_report_15())
    assert build_refused(quote).field == "body"
    quote = dataclasses.replace(sample_quote(5, BodyType.TD_REPORT_15), body=sample_td_report_10())
    assert build_refused(quote).field == "body"


def test_build_refuses_unknown_version_and_tee_type() -> None:
    quote = sample_quote()
    bad_version = dataclasses.replace(quote, header=dataclasses.replace(quote.header, version=3))
    assert build_refused(bad_version).field in {"header.version", "body_type"}
    bad_tee = dataclasses.replace(quote, header=dataclasses.replace(quote.header, tee_type=0))
    assert build_refused(bad_tee).field == "header.tee_type"


def test_build_refuses_wrong_field_lengths() -> None:
    quote = sample_quote()
    short_mr_td = dataclasses.replace(quote, body=dataclasses.replace(quote.body, mr_td=b"x"))
    assert build_refused(short_mr_td).field == "body.mr_td"
    sig = dataclasses.replace(quote.signature_data, signature=b"s" * 65)
    assert build_refused(dataclasses.replace(quote, signature_data=sig)).field == (
        "signature_data.signature"
    )


def test_build_refuses_integers_out_of_range() -> None:
    quote = sample_quote()
    big = dataclasses.replace(quote, header=dataclasses.replace(quote.header, qe_svn=0x10000))
    assert build_refused(big).field == "header.qe_svn"


def with_cert(cert: CertificationData) -> Quote:
    quote = sample_quote()
    return dataclasses.replace(
        quote, signature_data=dataclasses.replace(quote.signature_data, certification_data=cert)
    )


def test_build_refuses_ppid_of_the_wrong_size_for_its_type() -> None:
    cert = sample_cert_data(1)
    assert isinstance(cert.body, PpidCertData)
    bad = CertificationData(1, dataclasses.replace(cert.body, ppid=b"p" * 256))
    assert build_refused(with_cert(bad)).field == "signature_data.certification_data.body.ppid"


def test_build_refuses_body_of_the_wrong_kind_for_the_cert_type() -> None:
    assert build_refused(with_cert(CertificationData(1, b"raw"))).field.endswith(".body")
    assert build_refused(with_cert(CertificationData(6, b"raw"))).field.endswith(".body")
    assert build_refused(with_cert(CertificationData(5, sample_cert_data(1).body))).field.endswith(
        ".body"
    )


def test_build_refuses_unknown_cert_type() -> None:
    error = build_refused(with_cert(CertificationData(9, b"raw")))
    assert error.field == "signature_data.certification_data.cert_type"


def test_build_refuses_type_6_nested_in_type_6() -> None:
    inner = sample_cert_data(6)
    outer = sample_cert_data(6)
    assert isinstance(outer.body, QeReportCertData)
    nested = CertificationData(6, dataclasses.replace(outer.body, certification_data=inner))
    error = build_refused(with_cert(nested))
    assert error.field == "signature_data.certification_data.body.certification_data.cert_type"


def test_build_refuses_oversized_qe_auth_data() -> None:
    outer = sample_cert_data(6)
    assert isinstance(outer.body, QeReportCertData)
    big = CertificationData(6, dataclasses.replace(outer.body, qe_auth_data=bytes(0x10000)))
    error = build_refused(with_cert(big))
    assert error.field == "signature_data.certification_data.body.qe_auth_data.size"


def test_build_enclave_report_refuses_wrong_lengths() -> None:
    report = dataclasses.replace(sample_enclave_report(), report_data=b"r" * 63)
    with pytest.raises(QuoteFormatError) as info:
        build_enclave_report(report)
    assert info.value.field == "enclave_report.report_data"


def test_declared_sizes_match_intels_layout() -> None:
    assert _layout.Header.sizeof() == _layout.HEADER_SIZE == 48
    assert _layout.TdReport10.sizeof() == _layout.TD_REPORT_10_SIZE == 584
    assert _layout.TdReport15.sizeof() == _layout.TD_REPORT_15_SIZE == 648
    assert _layout.EnclaveReport.sizeof() == _layout.ENCLAVE_REPORT_SIZE == 384


@pytest.mark.parametrize(
    ("struct", "model"),
    [
        (_layout.Header, Header),
        (_layout.TdReport10, TdReport10),
        (_layout.TdReport15, TdReport15),
        (_layout.EnclaveReport, EnclaveReport),
        (_layout.QeReportCertificationData, QeReportCertData),
        (_layout.QuoteSignatureData, QuoteSignatureData),
    ],
)
def test_declaration_fields_are_the_dataclass_fields(struct: object, model: type) -> None:
    names = [sc.name for sc in struct.subcons]  # type: ignore[attr-defined]
    assert names == [field.name for field in dataclasses.fields(model)]


def test_build_enclave_report_refuses_a_bytearray_field_as_the_declaration_does() -> None:
    report = dataclasses.replace(sample_enclave_report(), mr_signer=bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(QuoteFormatError) as info:
        build_enclave_report(report)
    assert info.value.field == "enclave_report.mr_signer"
