"""Verification of RFC 9162 inclusion (2.1.3.2) and consistency (2.1.4.2) proofs."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ._errors import ProofError
from ._hashing import HASH_SIZE, node_hash


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{name} must be an integer")
    if value < 0:
        raise ProofError(f"{name} must not be negative, got {value}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, element in enumerate(proof):
        if not isinstance(element, bytes) or len(element) != HASH_SIZE:
            raise ProofError(f"proof element {i} is not a {HASH_SIZE}-byte hash")


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` gives for the leaf hash `leaf` at `index` in a tree of `size`.

    `leaf` is the leaf HASH (`leaf_hash(data)`, 32 bytes). Raises `ProofError` when the
    arguments or the proof's shape are wrong (index not below size, a proof of the wrong
    length, an element that is not 32 bytes).
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise ProofError(f"the leaf hash is not {HASH_SIZE} bytes")
    _check_proof(proof)
    fn, sn = index, size - 1
    result = leaf
    for element in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, element)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the path to the root")
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that the leaf hash `leaf` is at `index` in the tree of `size` with `root`."""
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if not _same(computed, root):
        raise ProofError("the inclusion proof does not lead to the given root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `second` leaves with `second_root` extends the tree of `first`
    leaves with `first_root`.

    `first == 0` is refused (nothing is proven: every tree extends the empty tree); equal
    sizes need an empty proof and equal roots.
    """
    _check_size("first size", first)
    _check_size("second size", second)
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if first == second:
        if proof:
            raise ProofError("equal sizes need an empty consistency proof")
        if not _same(first_root, second_root):
            raise ProofError("equal sizes but the roots differ")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    _check_proof(proof)
    elements = list(proof)
    if first & (first - 1) == 0:
        # The old tree is a complete subtree: its root is the proof's implicit first element.
        elements.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = elements[0]
    for element in elements[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, element)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than needed")
    # Both comparisons are made before raising, and each in constant time.
    first_ok = _same(fr, first_root)
    second_ok = _same(sr, second_root)
    if not first_ok:
        raise ProofError("the consistency proof does not lead to the first root")
    if not second_ok:
        raise ProofError("the consistency proof does not lead to the second root")
