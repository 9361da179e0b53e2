"""`jcs`: its json.dumps fast path writes exactly what `rfc8785` writes, and everything the
fast path does not take still goes to `rfc8785` (same bytes, same refusals)."""

from __future__ import annotations

import json
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_kbs_protocol import MessageError
from tdx_kbs_protocol._codec import _json_dumps_is_jcs, jcs

SAFE = 2**53 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.text()  # any code point but lone surrogates, control characters included
)
keys = st.text(max_size=8) | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_jcs_is_rfc8785(value: Any) -> None:
    assert jcs(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "text",
    [
        "".join(chr(c) for c in range(0x80)),  # every ASCII character, controls and DEL
        '{"events":[{"kind":"boot","nonce":"\\u0000"}]}\n\t\r\b\f',
        "\u2028\u2029\ufeff\u00e9\U0001f600",  # never escaped by either
    ],
)
def test_jcs_of_strings_escapes_as_rfc8785(text: str) -> None:
    value: dict[str, Any] = {
        "additional-evidence": text,
        "nonce": text,
        "tee-pubkey": {"kty": text},
    }
    assert _json_dumps_is_jcs(value)
    assert jcs(value) == rfc8785.dumps(value)


def test_keys_sorted_by_utf16_go_to_rfc8785() -> None:
    """Code point order and UTF-16 order differ past the BMP: such keys are not fast-pathed."""
    value = {"\U0001f600": 1, "\uff61": 2, "a": 3}
    assert not _json_dumps_is_jcs(value)
    assert jcs(value) == rfc8785.dumps(value)
    # UTF-16: U+1F600 is D83D DE00, before FF61 (code point order would put U+FF61 first)
    assert jcs(value).index("\U0001f600".encode()) < jcs(value).index("\uff61".encode())


class Small(IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        OrderedDict([("b", 1), ("a", 2)]),
        Small.ONE,
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
        1.5,
    ],
    ids=["tuple", "dict-subclass", "int-subclass", "deep", "float"],
)
def test_other_values_go_to_rfc8785(value: Any) -> None:
    assert not _json_dumps_is_jcs(value)
    assert jcs(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"n": SAFE + 1},
        {"n": -SAFE - 1},
        {"s": "\ud800"},
        {"s": ["x", "\udfff"]},
        {1: "x"},
        {"f": float("nan")},
        {"b": b"bytes"},
    ],
    ids=["int-max", "int-min", "surrogate", "nested-surrogate", "int-key", "nan", "bytes"],
)
def test_refusals_are_rfc8785s(value: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(value)
    with pytest.raises(MessageError, match="no canonical JSON form"):
        jcs(value)


def test_jcs_output_parses_back() -> None:
    value = {"z": [None, True, False, -SAFE, SAFE], "a": {"q": '"\\'}}
    assert json.loads(jcs(value)) == value
