"""The TD image allow-list parsing the registry and the key broker share."""

from __future__ import annotations

import pytest

from tdx_verify import (
    AllowlistError,
    missing_td_image_pins,
    parse_mrtd_allowlist,
    parse_rtmr_allowlist,
    require_td_image_pins,
)

A, B, C = "aa" * 48, "BB" * 48, "0c" * 48


def test_mrtd_items_from_repeated_flags_and_comma_lists() -> None:
    assert parse_mrtd_allowlist([f"{A}, {B}", "", f" {C} ,"]) == frozenset(
        {bytes.fromhex(A), bytes.fromhex(B), bytes.fromhex(C)}
    )
    assert parse_mrtd_allowlist([]) is None
    assert parse_mrtd_allowlist(["", " , "]) is None


def test_rtmr_items_by_index_with_alternatives() -> None:
    assert parse_rtmr_allowlist([f"0={A},2={B}", f"2 = {C}"]) == (
        frozenset({bytes.fromhex(A)}),
        None,
        frozenset({bytes.fromhex(B), bytes.fromhex(C)}),
    )
    assert parse_rtmr_allowlist([""]) is None


@pytest.mark.parametrize(
    ("flag", "item", "fragment"),
    [
        ("--mrtd-allowlist", "aa" * 47, "is not 48 bytes of hex"),
        ("--mrtd-allowlist", "zz" * 48, "is not 48 bytes of hex"),
        ("--rtmr-allowlist", f"3={A}", "is not INDEX=HEX with INDEX 0, 1 or 2"),
        ("--rtmr-allowlist", A, "is not INDEX=HEX"),
        ("--rtmr-allowlist", "1=" + "a" * 95, "is not 48 bytes of hex"),
    ],
)
def test_a_bad_item_is_refused_naming_its_flag(flag: str, item: str, fragment: str) -> None:
    parse = parse_mrtd_allowlist if flag == "--mrtd-allowlist" else parse_rtmr_allowlist
    with pytest.raises(AllowlistError) as info:
        parse([item], flag=flag)
    assert info.value.reason.startswith(f"{flag}: ")
    assert fragment in info.value.reason


def test_an_unpinned_td_image_is_refused_naming_what_is_missing() -> None:
    mrtd = frozenset({bytes.fromhex(A)})
    rtmrs = parse_rtmr_allowlist([f"0={A},1={A},2={A}"])
    require_td_image_pins(mrtd, rtmrs)
    assert missing_td_image_pins(mrtd, rtmrs) == []
    with pytest.raises(AllowlistError, match="no measurement policy for the TD image") as info:
        require_td_image_pins(None, parse_rtmr_allowlist([f"1={A}"]))
    assert "--mrtd-allowlist, --rtmr-allowlist 0=HEX, --rtmr-allowlist 2=HEX (" in str(info.value)
    assert "--any-measurement" in str(info.value)
    assert missing_td_image_pins(mrtd, None) == [f"--rtmr-allowlist {i}=HEX" for i in range(3)]
