"""`tdx_quote.parse_quote` on arbitrary bytes, against dcap-qvl's parser.

Each input is parsed twice, strictly and with `allow_zero_padding` (as the verifier parses,
for the 8000-byte buffers of configfs-tsm). Refusing is `QuoteFormatError` (the library's one
error). A quote accepted either way must parse with dcap-qvl too (the reference, except the
difference packages/tdx-quote/README.md documents), must be no
larger than `MAX_QUOTE_SIZE`, and must build back to the bytes it was parsed from
(`build_quote`: one declaration serves both directions); a strict acceptance must be the same
quote as the padded one.
"""

from __future__ import annotations

import dcap_qvl

from fuzz._harness import Finding, Harness
from tdx_quote import (
    MAX_QUOTE_SIZE,
    CertificationDataType,
    QuoteFormatError,
    build_quote,
    parse_quote,
)

QE_REPORT = CertificationDataType.QE_REPORT_CERTIFICATION_DATA


def target(data: bytes) -> None:
    quote = parse_quote(data, allow_zero_padding=True)
    try:
        strict = parse_quote(data)
    except QuoteFormatError:
        strict = None
    if strict is not None and strict != quote:
        raise Finding("the strict and the padded parse disagree")
    if len(data) > MAX_QUOTE_SIZE:
        raise Finding(f"accepted a quote of {len(data)} bytes, over MAX_QUOTE_SIZE")
    rebuilt = build_quote(quote)
    if data[: len(rebuilt)] != rebuilt or data[len(rebuilt) :].count(0) != len(data) - len(rebuilt):
        raise Finding("build_quote(parse_quote(data)) is not the bytes parsed")
    try:
        dcap_qvl.parse_quote(data)
    except ValueError as exc:
        # The README's one difference: an outer certification data of a type other than 6 is
        # not looked into here; dcap-qvl always decodes it as QE report certification data.
        if quote.signature_data.certification_data.cert_type != QE_REPORT:
            return
        raise Finding(f"tdx_quote accepts a quote dcap-qvl refuses: {exc}") from None


HARNESS = Harness(
    name="quote",
    summary="tdx_quote.parse_quote, differential against dcap-qvl's parse_quote",
    target=target,
    allowed=(QuoteFormatError,),
)
