"""Strict JSON in, canonical JSON out: the only two JSON operations this library performs."""

from __future__ import annotations

import json
from typing import NoReturn

from tdx_measure._errors import EventLogError


def dumps_canonical(value: object) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 without \\u escapes for non-ASCII.
    For the values events contain (ASCII keys, strings, integers below 2**53, null, arrays) this
    is byte-for-byte the RFC 8785 (JCS) form."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _reject_float(text: str) -> NoReturn:
    raise EventLogError(f"non-integer number {text[:32]!r}: only integers are allowed")


def _reject_constant(text: str) -> NoReturn:
    raise EventLogError(f"{text} is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise EventLogError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def loads_strict(data: str | bytes, *, max_bytes: int) -> object:
    """Parse JSON refusing what could make two readers disagree: invalid UTF-8, duplicate keys,
    floats, NaN/Infinity, oversized input. Every failure is an `EventLogError`."""
    if len(data) > max_bytes:
        raise EventLogError(f"JSON is {len(data)} long, more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventLogError(f"JSON is not valid UTF-8: {exc.reason} at {exc.start}") from None
    else:
        text = data
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except EventLogError:
        raise
    except RecursionError:
        raise EventLogError("JSON nests too deeply") from None
    except ValueError as exc:
        raise EventLogError(f"not valid JSON: {str(exc)[:200]}") from None
