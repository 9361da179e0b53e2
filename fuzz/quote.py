"""`tdx_quote.parse_quote` on arbitrary bytes, against dcap-qvl's parser.

Refusing is `QuoteFormatError` (the library's one error). A quote it accepts must parse with
dcap-qvl too (the reference), must be no larger than `MAX_QUOTE_SIZE`, and must build back to
the same bytes (`build_quote`), since the library has one declaration for both directions.
"""

from __future__ import annotations

import dcap_qvl

from fuzz._harness import Finding, Harness
from tdx_quote import MAX_QUOTE_SIZE, QuoteFormatError, build_quote, parse_quote


def target(data: bytes) -> None:
    quote = parse_quote(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise Finding(f"accepted a quote of {len(data)} bytes, over MAX_QUOTE_SIZE")
    try:
        dcap_qvl.parse_quote(data)
    except ValueError as exc:
        raise Finding(f"tdx_quote accepts a quote dcap-qvl refuses: {exc}") from None
    rebuilt = build_quote(quote)
    if rebuilt != data[: len(rebuilt)]:
        raise Finding("build_quote(parse_quote(data)) is not the bytes parsed")


HARNESS = Harness(
    name="quote",
    summary="tdx_quote.parse_quote, differential against dcap-qvl's parse_quote",
    target=target,
    allowed=(QuoteFormatError,),
)
