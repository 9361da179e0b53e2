"""transparency-dev/merkle's vectors: constants (leaves, nodes, roots of sizes 0-8) and every
inclusion and consistency case, negatives included (see vectors/NOTICE)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tdx_merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tdx_merkle._plan import NodeId

VECTORS = Path(__file__).parent / "vectors" / "transparency-dev"

# The number of files the NOTICE's commit holds: a lost file fails here instead of vanishing.
EXPECTED_FILES = {"inclusion": 98, "consistency": 98}


def _files(kind: str) -> list[Path]:
    directory = VECTORS / kind
    if not directory.is_dir():
        raise FileNotFoundError(f"missing vector directory {directory}")
    return sorted(directory.rglob("*.json"))


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _constants() -> dict[str, Any]:
    return _load(VECTORS / "constants.json")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(VECTORS)) for p in paths]


INCLUSION = _files("inclusion")
CONSISTENCY = _files("consistency")


def test_every_vector_file_is_there() -> None:
    assert len(INCLUSION) == EXPECTED_FILES["inclusion"]
    assert len(CONSISTENCY) == EXPECTED_FILES["consistency"]
    assert (VECTORS / "constants.json").is_file()
    assert (VECTORS / "LICENSE").is_file()
    assert (VECTORS.parent / "NOTICE").is_file()


@pytest.mark.parametrize("path", INCLUSION, ids=_ids(INCLUSION))
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(p) for p in case["proof"] or []]
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_ids(CONSISTENCY))
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), proof)
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_every_happy_path_is_checked() -> None:
    happy = [p for p in INCLUSION + CONSISTENCY if not _load(p)["wantErr"]]
    negative = [p for p in INCLUSION + CONSISTENCY if _load(p)["wantErr"]]
    assert len(happy) == 12
    assert len(negative) == 184


def test_constants_leaves_nodes_roots() -> None:
    const = _constants()
    leaves = [bytes.fromhex(x) for x in const["leaf_inputs_hex"]]
    nodes = [[bytes.fromhex(x) for x in level] for level in const["node_hashes_hex"]]
    roots = [bytes.fromhex(x) for x in const["root_hashes_hex"]]
    assert len(leaves) == 8 and len(roots) == 9
    assert roots[0] == EMPTY_ROOT
    hashes = [leaf_hash(leaf) for leaf in leaves]
    assert hashes == nodes[0]
    for level in range(1, len(nodes)):
        below = nodes[level - 1]
        assert nodes[level] == [
            node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(nodes[level]))
        ]
    for size in range(9):
        assert root_of(hashes[:size]) == roots[size]


def test_constants_through_the_stored_nodes() -> None:
    const = _constants()
    nodes = [[bytes.fromhex(x) for x in level] for level in const["node_hashes_hex"]]
    roots = [bytes.fromhex(x) for x in const["root_hashes_hex"]]
    store: dict[NodeId, bytes] = {
        (level, index): h for level, row in enumerate(nodes) for index, h in enumerate(row)
    }

    def read(wanted: object) -> dict[NodeId, bytes]:
        assert isinstance(wanted, list)
        return {node: store[node] for node in wanted}

    for size in range(9):
        assert root_hash(size, read) == roots[size]
    for size in range(1, 9):
        for index in range(size):
            proof = inclusion_proof(index, size, read)
            verify_inclusion(nodes[0][index], index, size, proof, roots[size])
        for first in range(1, size + 1):
            proof = consistency_proof(first, size, read)
            verify_consistency(first, size, roots[first], roots[size], proof)


def test_inclusion_vectors_match_our_proofs() -> None:
    # The happy paths' proofs are exactly the ones our plans produce over the constants tree.
    const = _constants()
    nodes = [[bytes.fromhex(x) for x in level] for level in const["node_hashes_hex"]]
    store = {(lv, i): h for lv, row in enumerate(nodes) for i, h in enumerate(row)}
    checked = 0
    for path in INCLUSION:
        case = _load(path)
        if case["wantErr"] or case["treeSize"] > 8:
            continue
        leaf = _b64(case["leafHash"])
        if leaf not in nodes[0] or nodes[0].index(leaf) != case["leafIdx"]:
            continue
        proof = inclusion_proof(
            case["leafIdx"], case["treeSize"], lambda w: {n: store[n] for n in w}
        )
        assert proof == [_b64(p) for p in case["proof"] or []]
        checked += 1
    assert checked >= 5
    for path in CONSISTENCY:
        case = _load(path)
        if case["wantErr"] or case["size2"] > 8 or case["size1"] == case["size2"]:
            continue
        proof = consistency_proof(case["size1"], case["size2"], lambda w: {n: store[n] for n in w})
        assert proof == [_b64(p) for p in case["proof"] or []]
        checked += 1
    assert checked >= 8
