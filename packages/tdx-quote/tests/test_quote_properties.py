"""Property tests: build/parse round-trips; hostile bytes only ever raise QuoteFormatError."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from quote_strategies import enclave_reports, quotes, sample_quote

from tdx_quote import (
    BodyType,
    Quote,
    QuoteFormatError,
    _layout,
    build_enclave_report,
    build_quote,
    build_signed_region,
    parse_enclave_report,
    parse_quote,
)


@given(quotes())
def test_build_then_parse_round_trips(quote: Quote) -> None:
    raw = build_quote(quote)
    parsed = parse_quote(raw)
    assert dataclasses.replace(parsed, signed_bytes=b"") == quote
    assert parsed.signed_bytes == build_signed_region(quote.header, quote.body_type, quote.body)
    assert raw.startswith(parsed.signed_bytes)
    assert build_quote(parsed) == raw


@given(quotes(), st.integers(1, 200))
def test_zero_padding_round_trips_only_when_allowed(quote: Quote, padding: int) -> None:
    raw = build_quote(quote) + bytes(padding)
    assert dataclasses.replace(parse_quote(raw, allow_zero_padding=True), signed_bytes=b"") == quote
    try:
        parse_quote(raw)
    except QuoteFormatError as error:
        assert error.field == "trailing_data"
    else:
        raise AssertionError("zero padding accepted without allow_zero_padding")


@given(enclave_reports)
def test_enclave_report_round_trips(report: Any) -> None:
    raw = build_enclave_report(report)
    assert len(raw) == 384
    assert parse_enclave_report(raw) == report


def parse_outcome(data: bytes, *, allow_zero_padding: bool = False) -> Quote | None:
    """Parse, allowing only QuoteFormatError; anything accepted must rebuild to the same bytes."""
    try:
        quote = parse_quote(data, allow_zero_padding=allow_zero_padding)
    except QuoteFormatError as error:
        assert error.field
        assert error.reason
        return None
    rebuilt = build_quote(quote)
    assert data.startswith(rebuilt)
    assert data[len(rebuilt) :].count(0) == len(data) - len(rebuilt)
    assert not allow_zero_padding or len(rebuilt) <= len(data)
    if not allow_zero_padding:
        assert rebuilt == data
    return quote


@given(st.binary(max_size=2000), st.booleans())
def test_random_bytes_only_raise_quote_format_error(data: bytes, pad: bool) -> None:
    parse_outcome(data, allow_zero_padding=pad)


@given(st.binary(min_size=48, max_size=48), st.binary(max_size=3000))
@example(build_quote(sample_quote())[:48], b"\x00" * 600)
def test_random_bytes_behind_a_valid_header_only_raise_quote_format_error(
    header: bytes, rest: bytes
) -> None:
    valid = build_quote(sample_quote(5, BodyType.TD_REPORT_15, 6))
    parse_outcome(valid[:48] + rest)
    parse_outcome(header + valid[48:])


@st.composite
def mutated_quotes(draw: st.DrawFn) -> bytes:
    """A valid quote with a few byte flips, truncations, insertions or deletions."""
    data = bytearray(build_quote(draw(quotes())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "set", "truncate", "insert", "delete")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@given(mutated_quotes(), st.booleans())
def test_mutated_quotes_only_raise_quote_format_error(data: bytes, pad: bool) -> None:
    parse_outcome(data, allow_zero_padding=pad)


def _parse_with(struct: Any, data: bytes) -> tuple[Any, int] | None:
    stream = io.BytesIO(data)
    try:
        return struct.parse_stream(stream), stream.tell()
    except Exception:
        return None


@given(mutated_quotes())
def test_compiled_declaration_is_as_strict_as_the_interpreted_one(data: bytes) -> None:
    """The fast path accepts exactly what the reference (interpreted) declaration accepts."""
    compiled = _parse_with(_layout.CompiledQuote, data)
    interpreted = _parse_with(_layout.Quote, data)
    assert (compiled is None) == (interpreted is None)
    if compiled is None or interpreted is None:
        return
    assert compiled[1] == interpreted[1]
    assert compiled[0] == interpreted[0]


@given(enclave_reports)
def test_enclave_report_fast_build_gives_the_declarations_bytes(report: Any) -> None:
    fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    assert build_enclave_report(report) == _layout.EnclaveReport.build(fields)


@given(
    enclave_reports,
    st.sampled_from(["misc_select", "isv_prod_id", "isv_svn"]),
    st.sampled_from([-1, 1 << 32, True]),
)
def test_enclave_report_integers_out_of_the_fast_path_get_the_declarations_verdict(
    report: Any, name: str, value: int
) -> None:
    odd = dataclasses.replace(report, **{name: value})
    fields = {f.name: getattr(odd, f.name) for f in dataclasses.fields(odd)}
    try:
        expected: bytes | None = _layout.EnclaveReport.build(fields)
    except Exception:  # any refusal of the declaration
        expected = None
    try:
        built: bytes | None = build_enclave_report(odd)
    except QuoteFormatError as error:
        assert error.field == f"enclave_report.{name}"
        built = None
    assert built == expected
