"""The test vectors that ship in tests/vectors: all present, named in NOTICE with their digests,
and the Google Cloud quote parsed (an 8,000-byte configfs-tsm style buffer, zero padded)."""

from __future__ import annotations

import hashlib

import dcap_qvl
import pytest

from tdx_quote import (
    BodyType,
    CertificationDataType,
    QuoteFormatError,
    TeeType,
    build_quote,
    parse_quote,
)
from tests.vectors import (
    GCP_QUOTE,
    SHIPPED,
    VECTORS_DIR,
    MissingVectorError,
    read_vector,
    vector_path,
)

GCP_BUFFER_SIZE = 8000
GCP_PADDING = 3065  # zero bytes after the quote proper in the buffer


@pytest.mark.parametrize("name", SHIPPED)
def test_every_vector_ships_and_notice_names_it_with_its_digest(name: str) -> None:
    notice = (VECTORS_DIR / "NOTICE").read_text()
    digest = hashlib.sha256(read_vector(name)).hexdigest()
    section = notice.split(name, 1)[1].split("\n\n", 1)[0]
    assert "Source:" in section and "Licence:" in section
    assert f"SHA-256: {digest}" in section


def test_a_missing_vector_is_an_error_naming_it() -> None:
    with pytest.raises(MissingVectorError, match=r"no_such_vector\.bin"):
        vector_path("no_such_vector.bin")


def test_gcp_quote_buffer_is_refused_without_zero_padding_allowed() -> None:
    raw = read_vector(GCP_QUOTE)
    assert len(raw) == GCP_BUFFER_SIZE
    with pytest.raises(QuoteFormatError) as info:
        parse_quote(raw)
    assert info.value.field == "trailing_data"
    assert f"{GCP_PADDING} bytes" in info.value.reason


def test_gcp_quote_parses_as_a_v4_td_quote_with_zero_report_data() -> None:
    raw = read_vector(GCP_QUOTE)
    quote = parse_quote(raw, allow_zero_padding=True)
    assert quote.header.version == 4
    assert quote.header.tee_type == TeeType.TDX
    assert quote.body_type == BodyType.TD_REPORT_10
    assert quote.body.report_data == bytes(64)
    cert = quote.signature_data.certification_data
    assert cert.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA
    nested = quote.qe_report_cert_data.certification_data
    assert nested.cert_type == CertificationDataType.PCK_CERT_CHAIN
    assert isinstance(nested.body, bytes)
    assert nested.body.count(b"-----BEGIN CERTIFICATE-----") == 3


def test_gcp_quote_rebuilds_to_the_same_bytes_and_padding() -> None:
    raw = read_vector(GCP_QUOTE)
    rebuilt = build_quote(parse_quote(raw, allow_zero_padding=True))
    assert len(rebuilt) == GCP_BUFFER_SIZE - GCP_PADDING
    assert rebuilt + bytes(GCP_PADDING) == raw


def test_gcp_quote_measurements_agree_with_dcap_qvl() -> None:
    raw = read_vector(GCP_QUOTE)
    ours = parse_quote(raw, allow_zero_padding=True).body
    ref = dcap_qvl.parse_quote(raw)
    assert ref.is_tdx()
    assert ours.mr_td == ref.report.mr_td
    assert ours.report_data == ref.report.report_data
    assert [ours.rtmr0, ours.rtmr1, ours.rtmr2, ours.rtmr3] == [
        ref.report.rt_mr0,
        ref.report.rt_mr1,
        ref.report.rt_mr2,
        ref.report.rt_mr3,
    ]
