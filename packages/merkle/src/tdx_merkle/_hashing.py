"""RFC 9162 section 2.1.1 hashing (SHA-256, domain-separated leaves and interior nodes)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

# MTH({}) = SHA-256() (RFC 9162 section 2.1.1).
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two k with k < n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are given: the reference computation, O(n) hashes.

    Reduces level by level: pairs are combined, an odd last node is carried up unchanged,
    which gives the same tree as RFC 9162's recursive split at the largest power of two.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
