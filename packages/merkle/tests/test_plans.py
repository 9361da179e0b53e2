"""The stored-subtree plans against recursive reference versions of RFC 9162's MTH, PATH and
PROOF (written here, section 2.1), over trees filled only through append_siblings /
appended_nodes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_merkle import (
    EMPTY_ROOT,
    MerkleArgumentError,
    MerkleError,
    MissingNodeError,
    NodeId,
    ProofError,
    append_siblings,
    appended_nodes,
    consistency_proof,
    consistency_proof_nodes,
    fold,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    range_nodes,
    root_hash,
    root_nodes,
    root_of,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


class Store:
    """A dict-backed log filled only through the plans; counts the reader's calls."""

    def __init__(self) -> None:
        self.nodes: dict[NodeId, bytes] = {}
        self.leaves: list[bytes] = []
        self.calls: list[list[NodeId]] = []

    def append(self, data: bytes) -> None:
        index = len(self.leaves)
        siblings = [self.nodes[n] for n in append_siblings(index)]
        for node, value in appended_nodes(index, leaf_hash(data), siblings):
            assert node not in self.nodes
            self.nodes[node] = value
        self.leaves.append(leaf_hash(data))

    def read(self, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        wanted = list(wanted)
        assert len(set(wanted)) == len(wanted), "the reader was asked twice for a node"
        self.calls.append(wanted)
        return {node: self.nodes[node] for node in wanted}


def _bound(n: int) -> int:
    return 2 * math.ceil(math.log2(max(n, 2))) + 2


def _grown(size: int) -> Store:
    store = Store()
    for i in range(size):
        store.append(i.to_bytes(4, "big"))
    return store


BIG = _grown(MAX_SIZE)


def _at(size: int) -> Store:
    # A store grown to `size` leaves (the first `size` leaves of BIG: the same data).
    store = Store()
    store.nodes = {(lv, i): h for (lv, i), h in BIG.nodes.items() if (i + 1) << lv <= size}
    store.leaves = BIG.leaves[:size]
    return store


def test_every_size_roots_and_stores_only_complete_nodes() -> None:
    store = Store()
    for size in range(1, MAX_SIZE + 1):
        store.append(size.to_bytes(4, "big"))
        assert root_hash(size, store.read) == root_of(store.leaves) == ref_mth(store.leaves)
        assert all((i + 1) << lv <= size for lv, i in store.nodes)
        # Every complete node is there: 2n - popcount(n).
        assert len(store.nodes) == 2 * size - bin(size).count("1")
    assert root_hash(0, store.read) == EMPTY_ROOT


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_SIZE), st.data())
def test_inclusion_proofs_match_the_reference(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    store = _at(size)
    proof = inclusion_proof(index, size, store.read)
    assert proof == ref_path(index, store.leaves)
    root = ref_mth(store.leaves)
    verify_inclusion(store.leaves[index], index, size, proof, root)
    # One read per operation; none for the tree of one leaf (its proof is empty).
    assert len(store.calls) == (1 if size > 1 else 0)
    if store.calls:
        assert len(store.calls[0]) <= _bound(size)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_SIZE), st.data())
def test_consistency_proofs_match_the_reference(second: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=1, max_value=second))
    store = _at(second)
    proof = consistency_proof(first, second, store.read)
    expected = [] if first == second else ref_proof(first, store.leaves)
    assert proof == expected
    verify_consistency(first, second, ref_mth(store.leaves[:first]), ref_mth(store.leaves), proof)
    assert len(store.calls) == (1 if proof else 0)
    if store.calls:
        assert len(store.calls[0]) <= _bound(second)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_root_reads_once_and_few(size: int) -> None:
    store = _at(size)
    assert root_hash(size, store.read) == ref_mth(store.leaves)
    assert len(store.calls) == (1 if size else 0)
    if size:
        assert len(store.calls[0]) == bin(size).count("1")


@given(st.integers(min_value=0, max_value=1 << 20), st.integers(min_value=0, max_value=1 << 10))
def test_range_nodes_tile_the_range(start: int, length: int) -> None:
    end = start + length
    nodes = range_nodes(start, end)
    position = start
    for level, index in nodes:
        assert index << level == position
        position += 1 << level
    assert position == end
    # Maximal: no two neighbours of one level could merge into their parent.
    for (l1, i1), (l2, i2) in itertools.pairwise(nodes):
        assert not (l1 == l2 and i1 % 2 == 0 and i2 == i1 + 1)


def test_small_plans_by_hand() -> None:
    # RFC 9162 2.1.5: the tree of 7 leaves; inclusion of d0 is [b, h, l].
    assert inclusion_proof_nodes(0, 7) == [[(0, 1)], [(1, 1)], [(1, 2), (0, 6)]]
    # Consistency 3 -> 7 is [c, d, g, l], 4 -> 7 is [l], 6 -> 7 is [i, j, k, g].
    assert consistency_proof_nodes(3, 7) == [[(0, 2)], [(0, 3)], [(1, 0)], [(1, 2), (0, 6)]]
    assert consistency_proof_nodes(4, 7) == [[(1, 2), (0, 6)]]
    assert consistency_proof_nodes(6, 7) == [[(1, 2)], [(0, 6)], [(2, 0)]]
    assert root_nodes(7) == [(2, 0), (1, 2), (0, 6)]
    assert root_nodes(0) == []
    assert append_siblings(0) == []
    assert append_siblings(7) == [(0, 6), (1, 2), (2, 0)]
    assert consistency_proof_nodes(0, 5) == [] and consistency_proof_nodes(5, 5) == []
    assert fold([]) == EMPTY_ROOT


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: inclusion_proof_nodes(3, 3), "not below the tree size"),
        (lambda: inclusion_proof_nodes(-1, 3), "negative"),
        (lambda: inclusion_proof_nodes(0, 0), "not below the tree size"),
        (lambda: consistency_proof_nodes(4, 3), "larger than second"),
        (lambda: consistency_proof_nodes(-1, 3), "negative"),
        (lambda: root_nodes(-1), "negative"),
        (lambda: range_nodes(5, 4), "past end"),
        (lambda: append_siblings(-2), "negative"),
        (lambda: append_siblings(True), "integer"),
        (lambda: appended_nodes(1, b"x" * 31, [b"y" * 32]), "32-byte"),
        (lambda: appended_nodes(1, b"x" * 32, []), "needs 1 sibling"),
        (lambda: appended_nodes(1, b"x" * 32, [b"y" * 33]), "32-byte"),
    ],
)
def test_bad_arguments(call: object, reason: str) -> None:
    assert callable(call)
    with pytest.raises(MerkleArgumentError, match=reason) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, MerkleError)


def test_reader_leaving_a_node_out() -> None:
    store = _at(10)

    def short(wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        return {n: store.nodes[n] for n in wanted[1:]}

    def bad(wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        return {n: b"short" for n in wanted}

    with pytest.raises(MissingNodeError):
        root_hash(10, short)
    with pytest.raises(MissingNodeError):
        inclusion_proof(3, 10, bad)


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=2, max_value=MAX_SIZE), st.data())
def test_mutated_inclusion_proofs_are_refused(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    store = _at(size)
    root = ref_mth(store.leaves)
    leaf = store.leaves[index]
    proof = inclusion_proof(index, size, store.read)
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    mutated = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, mutated, root)
    with pytest.raises(ProofError):
        verify_inclusion(_flip(leaf, bit), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, [*proof, proof[0]], root)
    other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        verify_inclusion(leaf, other, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=2, max_value=MAX_SIZE), st.data())
def test_mutated_consistency_proofs_are_refused(second: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=1, max_value=second - 1))
    store = _at(second)
    first_root, second_root = ref_mth(store.leaves[:first]), ref_mth(store.leaves)
    proof = consistency_proof(first, second, store.read)
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    mutated = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
    with pytest.raises(ProofError):
        verify_consistency(first, second, first_root, second_root, mutated)
    with pytest.raises(ProofError):
        verify_consistency(first, second, _flip(first_root, bit), second_root, proof)
    with pytest.raises(ProofError):
        verify_consistency(first, second, first_root, _flip(second_root, bit), proof)
    with pytest.raises(ProofError):
        verify_consistency(first, second, first_root, second_root, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(first, second, first_root, second_root, [*proof, proof[0]])


def test_readme_example() -> None:
    nodes: dict[NodeId, bytes] = {}

    def read(wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        return {node: nodes[node] for node in wanted}

    def append(index: int, entry: bytes) -> None:
        siblings = [nodes[n] for n in append_siblings(index)]
        for node, value in appended_nodes(index, leaf_hash(entry), siblings):
            nodes[node] = value

    for i, entry in enumerate([b"a", b"b", b"c"]):
        append(i, entry)
    root = root_hash(3, read)
    proof = inclusion_proof(1, 3, read)
    verify_inclusion(leaf_hash(b"b"), 1, 3, proof, root)
    assert root == root_of([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
