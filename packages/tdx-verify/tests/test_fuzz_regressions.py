"""Inputs the fuzz harnesses of fuzz/ found, each refused now with the library's own error.

JSON nested deeper than the interpreter's recursion limit made `json.loads` raise a bare
`RecursionError` (not a `ValueError`) out of the collateral and PCCS answer parsers (harnesses
tcb_info, qe_identity, verify)."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tdx_verify import Collateral, CollateralFormatError, PckChainError, Policy, Verifier
from tdx_verify._pccs import _signed_member
from tdx_verify._tcb import parse_qe_identity, parse_tcb_info

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
DEPTH = 20_000  # deeper than the C recursion limit of every supported Python (3.11-3.13)
DEEP = "[" * DEPTH + "]" * DEPTH


def test_deeply_nested_collateral_json_is_a_format_error() -> None:
    with pytest.raises(CollateralFormatError, match="nested too deeply"):
        Collateral.from_json(DEEP)
    with pytest.raises(CollateralFormatError, match="nested too deeply"):
        Collateral.from_json(DEEP.encode())


@pytest.mark.parametrize("member", ["tcbInfo", "enclaveIdentity"])
def test_a_deeply_nested_pccs_answer_is_a_format_error(member: str) -> None:
    with pytest.raises(CollateralFormatError, match="nested too deeply"):
        _signed_member(f'{{"{member}":{DEEP},"signature":"00"}}', member)


def test_deeply_nested_tcb_info_and_qe_identity_are_format_errors() -> None:
    with pytest.raises(CollateralFormatError, match="nested too deeply"):
        parse_tcb_info(DEEP)
    with pytest.raises(CollateralFormatError, match="nested too deeply"):
        parse_qe_identity(DEEP)


@pytest.mark.parametrize("field", ["pck_crl_issuer_chain", "tcb_info_issuer_chain", "tcb_info"])
def test_a_lone_surrogate_in_collateral_json_is_a_format_error(field: str) -> None:
    # verify: the real collateral with "\ud800" after the PEM of an issuer chain verified (the
    # chain is read as ASCII with replacement, text outside the PEM blocks ignored), while
    # dcap-qvl refuses the document (a lone surrogate is not Unicode text).
    fields = dict.fromkeys(
        (
            "pck_crl_issuer_chain",
            "root_ca_crl",
            "pck_crl",
            "tcb_info_issuer_chain",
            "tcb_info",
            "tcb_info_signature",
            "qe_identity_issuer_chain",
            "qe_identity",
            "qe_identity_signature",
        ),
        "30",
    )
    text = json.dumps({**fields, field: "-----BEGIN CERTIFICATE-----"}).replace(
        "-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\\ud800"
    )
    with pytest.raises(CollateralFormatError, match=f"{field}.*lone surrogate"):
        Collateral.from_json(text)


def _verify_case(data: bytes) -> tuple[Verifier, bytes, Collateral, datetime]:
    """The verify harness's framing: now (u64 BE) | root DER length (u16 BE) | root DER |
    quote length (u32 BE) | quote | collateral JSON."""
    now, root_len = struct.unpack_from(">QH", data)
    root = data[10 : 10 + root_len]
    (quote_len,) = struct.unpack_from(">I", data, 10 + root_len)
    quote = data[14 + root_len : 14 + root_len + quote_len]
    collateral = Collateral.from_json(data[14 + root_len + quote_len :])
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(root)
    verifier = Verifier(
        root_ca_pem=pem + b"-----END CERTIFICATE-----\n", policy=Policy(accepted_tcb_statuses=None)
    )
    return verifier, quote, collateral, datetime.fromtimestamp(now, UTC)


def test_a_pck_ca_certificate_repeating_an_extension_is_a_pck_chain_error() -> None:
    # verify: a simulator quote whose PCK CA certificate (in the quote's PEM chain) had one
    # base64 character changed so that it carries the subject key identifier twice; reading
    # its basic constraints raised cryptography's bare x509.DuplicateExtension.
    data = (REGRESSIONS / "verify_duplicate_extension.bin").read_bytes()
    verifier, quote, collateral, now = _verify_case(data)
    with pytest.raises(PckChainError, match=r"repeats extension 2\.5\.29\.14"):
        verifier.verify(quote, collateral, now=now)
