"""GET /log/*: the registry's append-only Merkle log, for anyone to audit (API.md, "Registry: a
log anyone can audit").

`/log/checkpoint` is the current head as a C2SP tlog-checkpoint in a signed note;
`/log/public-key` the note verifier key; `/log/entries` the leaves; `/log/proof/inclusion` and
`/log/proof/consistency` RFC 9162 proofs. Query parameters are strict decimal integers (no
sign, no leading '+', at most 19 digits, below 2**63); a bad one is a `LogArgumentError`, 400
through the app's error mapping.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, text

from tdx_merkle import Checkpoint, NoteSigner, sign_note

from ..log_store import MAX_ENTRIES
from ..services import services_of

_DECIMAL = re.compile(r"[0-9]{1,19}")
MAX_INTEGER: Final = 2**63 - 1
NO_STORE: Final = {"Cache-Control": "no-store"}


class LogArgumentError(Exception):
    """A /log/* query parameter is missing or out of range (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def query_int(request: Request[Any, Any], name: str) -> int:
    """The query parameter `name` as a non-negative integer, strictly."""
    values = request.args.getlist(name)
    if not values:
        raise LogArgumentError(f"query parameter {name!r} is required")
    if len(values) > 1:
        raise LogArgumentError(f"query parameter {name!r} is given more than once")
    value = values[0]
    if _DECIMAL.fullmatch(value) is None:
        raise LogArgumentError(
            f"query parameter {name!r} must be a decimal integer >= 0 (digits only, at most 19)"
        )
    number = int(value)
    if number > MAX_INTEGER:
        raise LogArgumentError(f"query parameter {name!r} is too large")
    return number


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def log_blueprint(signer: NoteSigner, origin: str) -> Blueprint:
    """A fresh blueprint (one per app) with the /log routes, signing checkpoints with
    `signer` under `origin`."""
    bp = Blueprint("log")
    verifier_key = signer.verifier_key()

    @bp.get("/log/checkpoint")
    async def get_checkpoint(request: Request[Any, Any]) -> HTTPResponse:
        size, root = await services_of(request).store.log_checkpoint_state()
        note = sign_note(Checkpoint(origin, size, root).to_text(), [signer])
        return text(note, headers=NO_STORE)

    @bp.get("/log/public-key")
    async def get_public_key(request: Request[Any, Any]) -> HTTPResponse:
        return text(verifier_key)

    @bp.get("/log/entries")
    async def get_entries(request: Request[Any, Any]) -> HTTPResponse:
        start, end = query_int(request, "start"), query_int(request, "end")
        if start >= end:
            raise LogArgumentError("start must be below end")
        if end - start > MAX_ENTRIES:
            raise LogArgumentError(f"at most {MAX_ENTRIES} entries per call (end - start)")
        found = await services_of(request).store.log_entries(start, end)
        return json(
            {
                "entries": [
                    {"index": e.index, "leaf_hash": _b64(e.leaf_hash), "entry": e.entry}
                    for e in found
                ]
            }
        )

    @bp.get("/log/proof/inclusion")
    async def get_inclusion(request: Request[Any, Any]) -> HTTPResponse:
        index, tree_size = query_int(request, "index"), query_int(request, "tree_size")
        if index >= tree_size:
            raise LogArgumentError("index must be below tree_size")
        hashes = await services_of(request).store.log_inclusion(index, tree_size)
        return json(
            {"leaf_index": index, "tree_size": tree_size, "hashes": [_b64(h) for h in hashes]}
        )

    @bp.get("/log/proof/consistency")
    async def get_consistency(request: Request[Any, Any]) -> HTTPResponse:
        first, second = query_int(request, "first"), query_int(request, "second")
        if first > second:
            raise LogArgumentError("first must not be above second")
        hashes = await services_of(request).store.log_consistency(first, second)
        return json({"first": first, "second": second, "hashes": [_b64(h) for h in hashes]})

    return bp
