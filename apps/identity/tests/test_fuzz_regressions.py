"""Inputs the fuzz harness identity_body (fuzz/) found, each refused now with the service's own
error: a configure or expose body nested deeper than the interpreter's recursion limit made
`json.loads` raise a bare `RecursionError` (a 500, not the 400 of `InvalidRequest`)."""

from __future__ import annotations

import pytest

from tdx_identity.exceptions import InvalidRequest
from tdx_identity.workload.requests import parse_configure, parse_expose

DEPTH = 20_000  # deeper than the C recursion limit of every supported Python (3.11-3.13)
DEEP = b"[" * DEPTH + b"]" * DEPTH
INSTANCE_PUBKEY = bytes(range(32))


def test_a_deeply_nested_configure_body_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_configure(DEEP, INSTANCE_PUBKEY)


def test_a_deeply_nested_expose_body_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_expose(b'{"image":' + DEEP + b"}", INSTANCE_PUBKEY)
