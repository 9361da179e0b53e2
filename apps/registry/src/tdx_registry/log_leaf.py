"""The registry log's leaf: what one accepted change of a record appends (API.md, "Registry: a
log anyone can audit").

A leaf's data is the UTF-8 bytes of the RFC 8785 canonical JSON of
`{"v": 1, "instance_pubkey", "time", "changes", "record"}`, where `record` is
`audited_state(wire)` of the record's wire form (GET /instance/{pubkey}), so that anybody
recomputes it from the GET answer, and `changes` names the `record` keys that differ from the
instance's previous leaf (`["instance"]` for its first one). Nothing here reads a database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import rfc8785

LEAF_VERSION: Final = 1
FIRST_CHANGE: Final = "instance"
"""`changes` of an instance's first leaf (it did not exist before, or predates the log)."""
UNAUDITED_VERIFICATION_KEYS: Final = frozenset({"verified_at", "history"})
"""Keys of `verification` a leaf leaves out: they move without anything audited changing."""


class LeafError(ValueError):
    """A wire record or a stored entry does not have the shape a leaf needs."""


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def audited_state(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The audited part of a record's wire form (`record_json`), from that dict alone."""
    try:
        quote = base64.b64decode(wire["attestation_quote"], validate=True)
        verification = wire["verification"]
        event_log = wire["event_log"]
        return {
            "ppid": wire["ppid"],
            "attestation_quote_sha256": _sha256_hex(quote),
            "operator": wire["operator"],
            "owner": wire["owner"],
            "verification": {
                key: value
                for key, value in verification.items()
                if key not in UNAUDITED_VERIFICATION_KEYS
            },
            "rtmr3": wire["rtmr3"],
            "event_log_sha256": (
                None if event_log is None else _sha256_hex(event_log.encode("utf-8"))
            ),
            "ssh_host_key": wire["ssh_host_key"],
            "binding_version": wire["binding_version"],
            "challenge": wire["challenge"],
            "proof_of_possession": wire["proof_of_possession"],
            "registered_at": wire["registered_at"],
        }
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise LeafError(f"the record's wire form lacks what a leaf needs: {exc!r}") from None


def changed_keys(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Sorted names of `current`'s keys whose value differs from `previous` (`["instance"]`
    when there is no previous state); empty when nothing audited changed."""
    if previous is None:
        return [FIRST_CHANGE]
    return sorted(key for key in current if key not in previous or previous[key] != current[key])


def leaf_entry(
    instance_pubkey: str, time: str, changes: list[str], state: Mapping[str, Any]
) -> str:
    """The leaf's canonical JSON text (its data is this text's UTF-8 bytes)."""
    try:
        data = rfc8785.dumps(
            {
                "v": LEAF_VERSION,
                "instance_pubkey": instance_pubkey,
                "time": time,
                "changes": changes,
                "record": dict(state),
            }
        )
    except rfc8785.CanonicalizationError as exc:
        raise LeafError(f"the leaf cannot be canonicalized: {exc}") from None
    return data.decode("utf-8")


def entry_state(entry: str) -> dict[str, Any]:
    """The `record` (audited state) of a stored leaf entry."""
    try:
        obj = json.loads(entry)
        state = obj["record"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LeafError(f"a stored log entry does not decode: {exc}") from None
    if not isinstance(state, dict):
        raise LeafError("a stored log entry's record is not an object")
    return state


def next_leaf(
    instance_pubkey: str,
    previous_state: Mapping[str, Any] | None,
    wire: Mapping[str, Any],
) -> tuple[str, dict[str, Any]] | None:
    """The leaf entry for a record whose new wire form is `wire`, given the audited state of
    the instance's previous leaf (None: none); None when nothing audited changed."""
    state = audited_state(wire)
    changes = changed_keys(previous_state, state)
    if not changes:
        return None
    try:
        time = wire["updated_at"]
    except KeyError:
        raise LeafError("the record's wire form has no updated_at") from None
    return leaf_entry(instance_pubkey, time, changes, state), state
