"""Inputs the fuzz harnesses of fuzz/ found, each refused now with the library's own error.

JSON nested deeper than the interpreter's recursion limit made `json.loads` raise a bare
`RecursionError` (not a `ValueError`) out of the collateral and PCCS answer parsers (harnesses
tcb_info, qe_identity, verify)."""

from __future__ import annotations

import json

import pytest

from tdx_verify import Collateral, CollateralFormatError
from tdx_verify._pccs import _signed_member
from tdx_verify._tcb import parse_qe_identity, parse_tcb_info

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
