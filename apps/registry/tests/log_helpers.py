"""The log's checks for the tests, written from docs/API.md ("The registry's log") rather than
from the registry's code: the audited state of a GET /instance answer, the expected leaf
bytes, and the invariants of a stored log (contiguous, every record pointing at a leaf of its
own state, stored nodes folding to the leaves' root)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
from pony.orm import db_session

from tdx_merkle import leaf_hash, root_hash, root_of
from tdx_registry import PonyRecordStore
from tdx_registry.routes.instance import record_json


def expected_state(wire: Mapping[str, Any]) -> dict[str, Any]:
    """API.md's `audited_state(w)`, from the wire record alone."""
    quote = base64.b64decode(wire["attestation_quote"])
    event_log = wire["event_log"]
    return {
        "ppid": wire["ppid"],
        "attestation_quote_sha256": hashlib.sha256(quote).hexdigest(),
        "operator": wire["operator"],
        "owner": wire["owner"],
        "verification": {
            k: v for k, v in wire["verification"].items() if k not in ("verified_at", "history")
        },
        "rtmr3": wire["rtmr3"],
        "event_log_sha256": (
            None if event_log is None else hashlib.sha256(event_log.encode()).hexdigest()
        ),
        "ssh_host_key": wire["ssh_host_key"],
        "binding_version": wire["binding_version"],
        "challenge": wire["challenge"],
        "proof_of_possession": wire["proof_of_possession"],
        "registered_at": wire["registered_at"],
    }


def expected_entry(wire: Mapping[str, Any], changes: list[str]) -> bytes:
    """The leaf's bytes for the record `wire` after a change of `changes`."""
    return rfc8785.dumps(
        {
            "v": 1,
            "instance_pubkey": wire["instance_pubkey"],
            "time": wire["updated_at"],
            "changes": changes,
            "record": expected_state(wire),
        }
    )


@dataclass(frozen=True)
class StoredLog:
    size: int
    leaves: list[tuple[int, bytes, str, str]]
    """(idx, leaf_hash, entry, instance_pubkey) in index order."""
    nodes: dict[tuple[int, int], bytes]
    log_index: dict[str, int | None]
    """Each instance's `log_index` column."""


async def stored_log(store: PonyRecordStore) -> StoredLog:
    """Everything the log tables and the records' `log_index` hold, read on the store's thread."""

    @db_session  # type: ignore[untyped-decorator]
    def read() -> StoredLog:
        db = store._db
        size = int(db.select("SELECT size FROM log_head WHERE id = 1")[0])
        leaves = [
            (int(i), bytes(h), str(e), str(p))
            for i, h, e, p in db.select(
                "SELECT idx, leaf_hash, entry, instance_pubkey FROM log_leaves ORDER BY idx"
            )
        ]
        nodes = {
            (int(level), int(i)): bytes(h)
            for level, i, h in db.select("SELECT level, idx, hash FROM log_nodes")
        }
        log_index = {
            str(p): None if i is None else int(i)
            for p, i in db.select("SELECT pubkey, log_index FROM instances")
        }
        return StoredLog(size, leaves, nodes, log_index)

    return await asyncio.get_running_loop().run_in_executor(store._executor, read)


async def check_log_invariants(store: PonyRecordStore) -> StoredLog:
    """Contiguous leaves 0..size-1, each leaf hash the hash of its entry and its level-0 node,
    stored nodes whose root is `root_of` the leaves, and every record's `log_index` naming the
    instance's latest leaf, whose `record` equals the record's audited state."""
    log = await stored_log(store)
    assert [leaf[0] for leaf in log.leaves] == list(range(log.size))
    hashes = [leaf[1] for leaf in log.leaves]
    for idx, value, entry, _ in log.leaves:
        assert value == leaf_hash(entry.encode()), idx
        assert log.nodes[(0, idx)] == value
    if log.size:
        assert root_hash(log.size, lambda ids: {i: log.nodes[i] for i in ids}) == root_of(hashes)
    latest: dict[str, int] = {}
    for idx, _, _, pubkey in log.leaves:
        latest[pubkey] = idx
    assert set(latest) == set(log.log_index)
    for pubkey, index in log.log_index.items():
        assert index == latest[pubkey], pubkey
        record = await store.get(bytes.fromhex(pubkey))
        assert record is not None
        entry = log.leaves[index][2]
        assert entry.encode() == rfc8785.dumps(_json(entry))  # canonical
        assert _json(entry)["record"] == expected_state(record_json(record))
    return log


def _json(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value
