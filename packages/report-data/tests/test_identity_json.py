"""The JSON object form of an identity: written in lowercase hex, read back strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_report_data import IdentityFormatError, IdentityInfo, ReportDataError

IDENTITY = IdentityInfo(bytes(range(32)), bytes(range(64)), bytes(range(64, 128)))


def test_to_object_is_the_api_form_in_lowercase_hex() -> None:
    assert IDENTITY.to_object() == {
        "pubkey": bytes(range(32)).hex(),
        "instance_signature": bytes(range(64)).hex(),
        "identity_signature": bytes(range(64, 128)).hex(),
    }


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
def test_from_object_reads_back_what_to_object_wrote(pubkey: bytes, signature: bytes) -> None:
    identity = IdentityInfo(pubkey, signature, signature[::-1])
    assert IdentityInfo.from_object(json.loads(json.dumps(identity.to_object()))) == identity


def test_from_object_accepts_uppercase_hex() -> None:
    upper = {key: value.upper() for key, value in IDENTITY.to_object().items()}
    assert IdentityInfo.from_object(upper) == IDENTITY


def _with(member: str, value: Any) -> dict[str, Any]:
    return {**IDENTITY.to_object(), member: value}


@pytest.mark.parametrize(
    ("obj", "field", "fragment"),
    [
        (None, "owner", "must be a JSON object, not NoneType"),
        ([], "owner", "must be a JSON object, not list"),
        ({**IDENTITY.to_object(), "extra": "00"}, "owner", "has unknown member(s) extra"),
        ({"pubkey": "00" * 32, "instance_signature": "00" * 64}, "owner.identity_signature",
         "is missing"),
        (_with("pubkey", "00" * 31), "owner.pubkey", "must be 32 bytes (64 hex digits)"),
        (_with("instance_signature", "00" * 65), "owner.instance_signature", "must be 64 bytes"),
        (_with("pubkey", 7), "owner.pubkey", "must be a hex string"),
        (_with("pubkey", "0" * 63), "owner.pubkey", "must be a hex string"),
        (_with("pubkey", "zz" * 32), "owner.pubkey", "must be a hex string"),
        (_with("pubkey", " " + "00" * 31 + " "), "owner.pubkey", "must be a hex string"),
        (_with("identity_signature", "\u0660" * 128), "owner.identity_signature",
         "must be a hex string"),
    ],
)  # fmt: skip
def test_from_object_names_the_member_it_refuses(obj: object, field: str, fragment: str) -> None:
    with pytest.raises(IdentityFormatError) as caught:
        IdentityInfo.from_object(obj, name="owner")
    assert caught.value.field == field
    assert fragment in caught.value.reason
    assert isinstance(caught.value, ReportDataError)
    assert isinstance(caught.value, ValueError)
