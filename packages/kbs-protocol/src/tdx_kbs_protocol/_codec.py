"""Strict base64 and JSON helpers shared by the message modules."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

import rfc8785

from tdx_kbs_protocol._errors import MessageError

_STD_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_URL_B64 = re.compile(r"[A-Za-z0-9_-]*")


def b64std_decode(text: str, *, what: str, max_bytes: int) -> bytes:
    """Decode standard padded base64; refuse another alphabet, junk or non-canonical bits."""
    if len(text) > 4 * ((max_bytes + 2) // 3):
        raise MessageError(f"{what} is longer than {max_bytes} bytes")
    if _STD_B64.fullmatch(text) is None:
        raise MessageError(f"{what} is not standard base64 with padding")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError(f"{what} is not standard base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise MessageError(f"{what} is not canonical base64")
    if len(raw) > max_bytes:
        raise MessageError(f"{what} is longer than {max_bytes} bytes")
    return raw


def b64std_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url_decode(text: str, *, what: str, max_bytes: int) -> bytes:
    """Decode unpadded base64url (RFC 7515 section 2); refuse junk and non-canonical bits."""
    if len(text) > (4 * max_bytes + 2) // 3:
        raise MessageError(f"{what} is longer than {max_bytes} bytes")
    if _URL_B64.fullmatch(text) is None or len(text) % 4 == 1:
        raise MessageError(f"{what} is not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MessageError(f"{what} is not base64url") from exc
    if b64url_encode(raw) != text:
        raise MessageError(f"{what} is not canonical base64url")
    return raw


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_JCS_INT_MAX = 2**53 - 1
_JCS_FAST_DEPTH = 32


def _json_dumps_is_jcs(value: object, depth: int = 0) -> bool:
    """Whether `json.dumps(sort_keys, no spaces, ensure_ascii=False)` writes exactly RFC 8785's
    text for `value`: only exact dicts with ASCII keys (code point order is then UTF-16 order),
    lists, str, bool, None and ints within +-(2**53 - 1), nested at most 32 deep. Both escape
    exactly `"`, `\\` and U+0000-U+001F, with the same short forms and lowercase `\\u00xx`."""
    if value is None or type(value) is str or type(value) is bool:
        return True
    if type(value) is int:
        return -_JCS_INT_MAX <= value <= _JCS_INT_MAX
    if depth >= _JCS_FAST_DEPTH:
        return False
    if type(value) is list:
        return all(_json_dumps_is_jcs(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(
            type(k) is str and k.isascii() and _json_dumps_is_jcs(v, depth + 1)
            for k, v in value.items()
        )
    return False


def jcs(value: object) -> bytes:
    """RFC 8785 canonical JSON of a value made of dicts, lists, str, int, bool and None.

    Values `json.dumps` writes canonically take its C encoder (the event log inside the
    additional evidence is long: `rfc8785` escapes strings in Python); anything else, and a
    string with a lone surrogate, goes to `rfc8785`, which decides and names the refusal."""
    if _json_dumps_is_jcs(value):
        try:
            return json.dumps(
                value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except UnicodeEncodeError:
            pass
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, TypeError, ValueError, UnicodeError) as exc:
        raise MessageError(f"value has no canonical JSON form: {exc}") from exc


def loads_object(text: str | bytes, *, what: str, max_bytes: int) -> dict[str, object]:
    """Parse JSON text that must be an object; duplicate member names are refused."""
    if len(text) > max_bytes:
        raise MessageError(f"{what} is longer than {max_bytes} bytes")

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in items:
            if key in out:
                raise MessageError(f"{what} has a duplicate member {key!r}")
            out[key] = value
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, MessageError):
            raise
        raise MessageError(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise MessageError(f"{what} is not a JSON object")
    return value


def _refuse_constant(name: str) -> object:
    raise MessageError(f"JSON constant {name} is not allowed")


def expect_object(
    obj: object,
    *,
    what: str,
    required: frozenset[str],
    optional: frozenset[str] = frozenset(),
) -> Mapping[str, object]:
    """Check that obj is a dict with str keys, all required members and no unknown ones."""
    if not isinstance(obj, dict):
        raise MessageError(f"{what} is not a JSON object")
    keys = set(obj)
    if not all(isinstance(k, str) for k in keys):
        raise MessageError(f"{what} has a non-string member name")
    missing = required - keys
    if missing:
        raise MessageError(f"{what} lacks {', '.join(sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise MessageError(f"{what} has unknown member(s) {', '.join(sorted(unknown))}")
    return obj


def expect_str(obj: object, *, what: str, max_len: int, allow_empty: bool = True) -> str:
    if not isinstance(obj, str):
        raise MessageError(f"{what} is not a string")
    if len(obj) > max_len:
        raise MessageError(f"{what} is longer than {max_len} characters")
    if not allow_empty and not obj:
        raise MessageError(f"{what} is empty")
    try:
        obj.encode("utf-8")
    except UnicodeError as exc:
        raise MessageError(f"{what} is not valid Unicode text") from exc
    return obj
