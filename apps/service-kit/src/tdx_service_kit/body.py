"""Strict request-body helpers: a JSON object in, typed values out, 400 naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sanic import Request

from .errors import BadRequest

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def _reject_constant(name: str) -> float:
    raise BadRequest(f"body is not valid JSON: {name} is not allowed")


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"body is not valid JSON: duplicate key {key!r}")
        out[key] = value
    return out


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse `raw` as one JSON object (UTF-8, no duplicate keys, no NaN/Infinity)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_object_no_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest("body is not a JSON object")
    return value


def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or 400."""
    if not request.body:
        raise BadRequest("body is empty, expected a JSON object")
    return parse_json_object(request.body)


def parse_hex(value: object, name: str, *, length: int | None = None) -> bytes:
    """Decode `value` as hex (even length, no whitespace) of exactly `length` bytes if given."""
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a hex string")
    if _HEX.fullmatch(value) is None:
        raise BadRequest(f"field {name!r} is not valid hex")
    data = bytes.fromhex(value)
    if length is not None and len(data) != length:
        raise BadRequest(f"field {name!r} must be {length} bytes ({2 * length} hex characters)")
    return data


def require_hex(
    obj: Mapping[str, Any], name: str, *, length: int | None = None, label: str | None = None
) -> bytes:
    """`obj[name]` decoded from hex; 400 naming the field (`label`, default `name`) otherwise."""
    shown = label or name
    if name not in obj:
        raise BadRequest(f"field {shown!r} is missing")
    return parse_hex(obj[name], shown, length=length)
