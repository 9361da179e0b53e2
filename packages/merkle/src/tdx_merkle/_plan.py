"""Proof plans over stored complete subtrees (RFC 9162 section 2.1).

A log stores, for every complete subtree it has, the node `(level, index)`: the MTH of the
leaves `[index * 2**level, (index + 1) * 2**level)`. Every hash a client needs (a root, an
inclusion path, a consistency proof) is either such a node or the MTH of a range on the right
border of the tree, which is the right fold of the range's maximal complete subtrees. The
functions here only say WHICH nodes; the convenience functions read them through a
`NodeReader`, called once per operation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from ._errors import MerkleArgumentError, MissingNodeError
from ._hashing import EMPTY_ROOT, HASH_SIZE, _largest_power_of_two_below, node_hash

NodeId: TypeAlias = tuple[int, int]
"""`(level, index)`: the complete subtree over leaves `[index * 2**level, (index+1) * 2**level)`."""

NodeReader: TypeAlias = Callable[[Sequence[NodeId]], Mapping[NodeId, bytes]]
"""Returns the stored hash of every node asked for (one call per operation, de-duplicated)."""


def _check_int(name: str, value: int) -> None:
    # bool is an int subclass: refuse it, a True index is a bug in the caller.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MerkleArgumentError(f"{name} must be an integer")
    if value < 0:
        raise MerkleArgumentError(f"{name} must not be negative, got {value}")


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleArgumentError(f"{name} must be a {HASH_SIZE}-byte hash")


def append_siblings(index: int) -> list[NodeId]:
    """The stored nodes needed to append leaf `index` (the tree then has `index + 1` leaves).

    These are the left siblings of the complete subtrees that the new leaf completes, lowest
    level first: one per trailing 1 bit of `index`.
    """
    _check_int("index", index)
    siblings: list[NodeId] = []
    level, position = 0, index
    while position & 1:
        siblings.append((level, position - 1))
        level, position = level + 1, position >> 1
    return siblings


def appended_nodes(
    index: int, leaf: bytes, siblings: Sequence[bytes]
) -> list[tuple[NodeId, bytes]]:
    """The complete nodes to store once leaf `index` is appended, level 0 first.

    `leaf` is the leaf hash (`leaf_hash(data)`), `siblings` the hashes of
    `append_siblings(index)` in that order.
    """
    wanted = append_siblings(index)
    _check_hash("leaf", leaf)
    if len(siblings) != len(wanted):
        raise MerkleArgumentError(
            f"appending leaf {index} needs {len(wanted)} sibling hashes, got {len(siblings)}"
        )
    for i, sibling in enumerate(siblings):
        _check_hash(f"siblings[{i}]", sibling)
    nodes: list[tuple[NodeId, bytes]] = [((0, index), leaf)]
    current = leaf
    for (level, position), sibling in zip(wanted, siblings, strict=True):
        current = node_hash(sibling, current)
        nodes.append(((level + 1, position >> 1), current))
    return nodes


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The maximal complete subtrees covering leaves `[start, end)`, left to right."""
    _check_int("start", start)
    _check_int("end", end)
    if start > end:
        raise MerkleArgumentError(f"start {start} is past end {end}")
    nodes: list[NodeId] = []
    while start < end:
        # The largest aligned block at `start` that still fits in the range.
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its `range_nodes`: node(h0, node(h1, ...)).

    The empty range folds to `EMPTY_ROOT`. Exact for every range RFC 9162 hashes: complete
    subtrees and ranges `[a, b)` on the right border whose start is aligned to a power of two
    not smaller than `b - a`.
    """
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def root_nodes(size: int) -> list[NodeId]:
    """The nodes whose fold is the root of the tree of `size` leaves (none for size 0)."""
    _check_int("size", size)
    return range_nodes(0, size)


def _path(index: int, start: int, end: int, out: list[tuple[int, int]]) -> None:
    # RFC 9162 2.1.3.1 PATH(m, D[start:end]), iteratively, appended deepest first.
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start = start + k
    out.extend(reversed(ranges))


def inclusion_proof_nodes(index: int, size: int) -> list[list[NodeId]]:
    """For each element of the inclusion proof of leaf `index` in the tree of `size` leaves
    (RFC 9162 2.1.3.1 order: from the leaf up to the root), the nodes whose fold gives it."""
    _check_int("index", index)
    _check_int("size", size)
    if index >= size:
        raise MerkleArgumentError(f"index {index} is not below the tree size {size}")
    ranges: list[tuple[int, int]] = []
    _path(index, 0, size, ranges)
    return [range_nodes(a, b) for a, b in ranges]


def consistency_proof_nodes(first: int, second: int) -> list[list[NodeId]]:
    """For each element of the consistency proof from the tree of `first` leaves to the tree
    of `second` leaves (RFC 9162 2.1.4.1 PROOF(m, D[n]) order), the nodes whose fold gives it.

    `first == second` and `first == 0` give the empty proof (RFC 9162 defines no proof there;
    `verify_consistency` refuses `first == 0`: every tree extends the empty one).
    """
    _check_int("first", first)
    _check_int("second", second)
    if first > second:
        raise MerkleArgumentError(f"first size {first} is larger than second size {second}")
    if first == 0 or first == second:
        return []
    # SUBPROOF(m, D[start:end], b), iteratively; the elements come out root-side first.
    outer: list[tuple[int, int]] = []
    start, end, m, complete_old = 0, second, first, True
    tail: list[tuple[int, int]] = []
    while True:
        if m == end - start:
            if not complete_old:
                tail.append((start, end))
            break
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            outer.append((start + k, end))
            end = start + k
        else:
            outer.append((start, start + k))
            start, m, complete_old = start + k, m - k, False
    ranges = tail + list(reversed(outer))
    return [range_nodes(a, b) for a, b in ranges]


def _read_all(plan: Sequence[Sequence[NodeId]], read: NodeReader) -> list[bytes]:
    wanted = list(dict.fromkeys(node for element in plan for node in element))
    if not wanted:
        return [fold([]) for _ in plan]
    got = read(wanted)
    hashes: dict[NodeId, bytes] = {}
    for node in wanted:
        value = got.get(node)
        if value is None:
            raise MissingNodeError(f"the node reader returned no hash for node {node}")
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise MissingNodeError(f"the node reader returned a malformed hash for node {node}")
        hashes[node] = value
    return [fold([hashes[node] for node in element]) for element in plan]


def root_hash(size: int, read: NodeReader) -> bytes:
    """The root of the tree of `size` leaves from its stored nodes (`EMPTY_ROOT` for 0)."""
    return _read_all([root_nodes(size)], read)[0]


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves."""
    return _read_all(inclusion_proof_nodes(index, size), read)


def consistency_proof(first: int, second: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of `first` leaves to that of `second`."""
    return _read_all(consistency_proof_nodes(first, second), read)
