"""Inputs the fuzz harnesses of fuzz/ found (kept in tests/fuzz_regressions/)."""

from __future__ import annotations

from pathlib import Path

import dcap_qvl
import pytest

from tdx_quote import CertificationDataType, parse_quote

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


def test_an_outer_certification_data_of_another_type_is_not_looked_into() -> None:
    # quote: the real quote with its outer certification data type 6 changed to 4 (a PCK leaf
    # certificate) and the nested block's size inside the old QE report data made huge. This
    # library parses a type-4 body as opaque bytes (README: types 1-7); dcap-qvl always decodes
    # the outer body as QE report certification data and refuses. The README's "Differences from
    # dcap-qvl" documents it; tdx-verify refuses any outer type but 6 (test_verify_*).
    data = (REGRESSIONS / "quote_outer_type4_qe_report_body.bin").read_bytes()
    quote = parse_quote(data)
    assert quote.signature_data.certification_data.cert_type == CertificationDataType.PCK_LEAF_CERT
    with pytest.raises(ValueError, match="certification_data"):
        dcap_qvl.parse_quote(data)
