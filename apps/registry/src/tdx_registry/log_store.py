"""The registry's append-only Merkle log in the record store's database (RFC 9162 hashing,
`tdx_merkle`'s stored-subtree plans).

Tables (Pony entities declared on the store's `Database`):
- `log_leaves(idx PK, leaf_hash, entry, instance_pubkey)`: one row per leaf, `entry` its
  canonical JSON text (`log_leaf`), `leaf_hash` = SHA-256(0x00 || entry UTF-8);
- `log_nodes(level, idx, hash; PK(level, idx))`: the hash of every complete subtree (level 0:
  the leaf hashes), written once when its last leaf is appended and never changed, so an
  append reads the head and `append_siblings` (at most log2(n) nodes) and a root or a proof
  reads O(log n) nodes, each in ONE query;
- `log_head(id = 1, size)`: the log's size. An appender reads it `FOR UPDATE` (PostgreSQL; on
  SQLite the store's immediate transaction already holds the write lock), so appenders on any
  number of replicas sharing the database form one sequence, without gap or duplicate;
- `log_key(id = 1, verifier_key)`: the note verifier key (public) of the log's signing key,
  pinned by the first registry that started on this database (`pin_verifier_key`), so a
  replica or a restart with another key file refuses to serve (`log_pin`).

Every function here runs inside the caller's `db_session`: an append is part of the
registration's own transaction, so the log and the records never disagree. A reader sees a
head and then nodes; every node of a committed size is committed with it and never changes,
so a root or a proof read that way is the one of that size even while others append.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pony.orm import Database, PrimaryKey, Required

from tdx_merkle import (
    NodeId,
    NodeReader,
    append_siblings,
    appended_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
)

from .log_leaf import LeafError, entry_state

HEAD_ID: Final = 1
KEY_ROW_ID: Final = 1
MAX_ENTRIES: Final = 1000
"""GET /log/entries serves at most this many leaves per call."""


class LogRangeError(Exception):
    """A log read names leaves or tree sizes the log does not have (a 400 for the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LogCorruptError(Exception):
    """The stored log lacks a node, a leaf or the head it must have: the database was altered
    or damaged."""


@dataclass(frozen=True)
class LogTables:
    """The log's entity classes on one `Database`."""

    leaf: Any
    node: Any
    head: Any
    key: Any


@dataclass(frozen=True)
class LogEntry:
    """One leaf as GET /log/entries serves it."""

    index: int
    leaf_hash: bytes
    entry: str


def define_log_entities(db: Database) -> LogTables:
    """Declare the log's entities on a fresh `Database` (one per store, no global)."""

    class LogLeaf(db.Entity):  # type: ignore[misc]
        _table_ = "log_leaves"
        idx = PrimaryKey(int, size=64)
        leaf_hash = Required(bytes)
        entry = Required(str)
        instance_pubkey = Required(str, 64, index=True)

    class LogNode(db.Entity):  # type: ignore[misc]
        _table_ = "log_nodes"
        level = Required(int)
        idx = Required(int, size=64)
        node_hash = Required(bytes, column="hash")
        PrimaryKey(level, idx)

    class LogHead(db.Entity):  # type: ignore[misc]
        _table_ = "log_head"
        id = PrimaryKey(int)
        size = Required(int, size=64)

    return LogTables(leaf=LogLeaf, node=LogNode, head=LogHead, key=define_log_key_entity(db))


def define_log_key_entity(db: Database) -> Any:
    """Declare the `log_key` entity (the pinned verifier key) on a fresh `Database`."""

    class LogKey(db.Entity):  # type: ignore[misc]
        _table_ = "log_key"
        id = PrimaryKey(int)
        verifier_key = Required(str)

    return LogKey


def ensure_head(db: Database) -> None:
    """Create the head row (size 0) unless it exists; safe when replicas start together."""
    db.execute(
        "INSERT INTO log_head (id, size) VALUES ($head_id, 0) ON CONFLICT (id) DO NOTHING",
        {"head_id": HEAD_ID},
    )


def pin_verifier_key(db: Database, verifier_key: str) -> str:
    """Store `verifier_key` as the log's unless one is pinned already; the pinned one. Insert if
    absent, then re-read: of starts that race on an empty database, one insert wins and every
    one of them reads that winner's key."""
    db.execute(
        "INSERT INTO log_key (id, verifier_key) VALUES ($key_id, $verifier_key) "
        "ON CONFLICT (id) DO NOTHING",
        {"key_id": KEY_ROW_ID, "verifier_key": verifier_key},
    )
    rows = db.select("SELECT verifier_key FROM log_key WHERE id = $key_id", {"key_id": KEY_ROW_ID})
    if len(rows) != 1:
        raise LogCorruptError("the log's pinned key row vanished")
    return str(rows[0])


def node_reader(db: Database, on_read: Callable[[int], None] | None = None) -> NodeReader:
    """A `NodeReader` answering every node asked in ONE query; `on_read(rows)` is told how many
    rows each query returned (benchmarks)."""

    def read(ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        params: dict[str, int] = {}
        terms: list[str] = []
        for n, (level, index) in enumerate(wanted):
            params[f"l{n}"], params[f"i{n}"] = level, index
            terms.append(f"(level = $l{n} AND idx = $i{n})")
        # Only the generated placeholder names are interpolated; every value is a parameter.
        sql = "SELECT level, idx, hash FROM log_nodes WHERE " + " OR ".join(terms)  # noqa: S608
        rows = db.select(sql, params)
        if on_read is not None:
            on_read(len(rows))
        found = {(int(level), int(index)): bytes(value) for level, index, value in rows}
        missing = [node for node in wanted if node not in found]
        if missing:
            raise LogCorruptError(f"the log lacks stored nodes {missing[:4]}")
        return found

    return read


def head_size(tables: LogTables, *, for_update: bool = False) -> int:
    """The log's current size (its head read `FOR UPDATE` when `for_update`)."""
    head = tables.head.get_for_update(id=HEAD_ID) if for_update else tables.head.get(id=HEAD_ID)
    if head is None:
        raise LogCorruptError("the log has no head row")
    return int(head.size)


def append(
    db: Database,
    tables: LogTables,
    entry: str,
    instance_pubkey: str,
    *,
    on_read: Callable[[int], None] | None = None,
) -> int:
    """Append one leaf in the caller's transaction; its index. (`on_read`: `node_reader`'s.)"""
    head = tables.head.get_for_update(id=HEAD_ID)
    if head is None:
        raise LogCorruptError("the log has no head row")
    index = int(head.size)
    siblings = append_siblings(index)
    stored = node_reader(db, on_read)(siblings)
    leaf = leaf_hash(entry.encode("utf-8"))
    tables.leaf(idx=index, leaf_hash=leaf, entry=entry, instance_pubkey=instance_pubkey)
    for (level, node_index), value in appended_nodes(
        index, leaf, [stored[node] for node in siblings]
    ):
        tables.node(level=level, idx=node_index, node_hash=value)
    head.size = index + 1
    return index


def leaf_state(tables: LogTables, index: int) -> dict[str, Any]:
    """The audited state (`record`) of the stored leaf `index`."""
    row = tables.leaf.get(idx=index)
    if row is None:
        raise LogCorruptError(f"a record names log leaf {index}, which the log lacks")
    try:
        return entry_state(row.entry)
    except LeafError as exc:
        raise LogCorruptError(str(exc)) from None


def checkpoint_state(db: Database, tables: LogTables) -> tuple[int, bytes]:
    """The current size and its root hash."""
    size = head_size(tables)
    return size, root_hash(size, node_reader(db))


def _check_size(name: str, value: int, size: int) -> None:
    if value > size:
        raise LogRangeError(f"{name} {value} is past the log's current size {size}")


def entries(tables: LogTables, start: int, end: int) -> list[LogEntry]:
    """Leaves `start` to `min(end, size) - 1`; `start` must be below the current size."""
    size = head_size(tables)
    if start >= size:
        raise LogRangeError(f"start {start} is not below the log's current size {size}")
    stop = min(end, size)
    leaf = tables.leaf
    rows = leaf.select(lambda row: row.idx >= start and row.idx < stop).order_by(leaf.idx)[:]
    found = [LogEntry(int(row.idx), bytes(row.leaf_hash), str(row.entry)) for row in rows]
    if [item.index for item in found] != list(range(start, stop)):
        raise LogCorruptError(f"the log lacks leaves between {start} and {stop}")
    return found


def inclusion(
    db: Database,
    tables: LogTables,
    index: int,
    tree_size: int,
    *,
    on_read: Callable[[int], None] | None = None,
) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `index` in the tree of `tree_size` leaves."""
    _check_size("tree_size", tree_size, head_size(tables))
    return inclusion_proof(index, tree_size, node_reader(db, on_read))


def consistency(
    db: Database,
    tables: LogTables,
    first: int,
    second: int,
    *,
    on_read: Callable[[int], None] | None = None,
) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of `first` leaves to that of `second`."""
    _check_size("second", second, head_size(tables))
    return consistency_proof(first, second, node_reader(db, on_read))
