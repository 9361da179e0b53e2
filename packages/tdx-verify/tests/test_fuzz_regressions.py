"""Inputs the fuzz harnesses of fuzz/ found, each refused now with the library's own error.

JSON nested deeper than the interpreter's recursion limit made `json.loads` raise a bare
`RecursionError` (not a `ValueError`) out of the collateral and PCCS answer parsers (harnesses
tcb_info, qe_identity, verify)."""

from __future__ import annotations

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
