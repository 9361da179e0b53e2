"""tdx-merkle: RFC 9162 Merkle logs, stored-subtree proof plans, C2SP signed notes, checkpoints.

Pure and typed: no I/O, no global state. A database stores complete subtrees as
`NodeId = (level, index)` and answers one `NodeReader` call per operation.
"""

from __future__ import annotations

from ._checkpoint import MAX_TREE_SIZE, Checkpoint
from ._errors import (
    CheckpointError,
    MerkleArgumentError,
    MerkleError,
    MissingNodeError,
    NoteError,
    ProofError,
)
from ._hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash, root_of
from ._note import MAX_SIGNATURES, NoteSigner, NoteVerifier, SignedNote, open_note, sign_note
from ._plan import (
    NodeId,
    NodeReader,
    append_siblings,
    appended_nodes,
    consistency_proof,
    consistency_proof_nodes,
    fold,
    inclusion_proof,
    inclusion_proof_nodes,
    range_nodes,
    root_hash,
    root_nodes,
)
from ._verify import root_from_inclusion_proof, verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "Checkpoint",
    "CheckpointError",
    "MerkleArgumentError",
    "MerkleError",
    "MissingNodeError",
    "NodeId",
    "NodeReader",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "SignedNote",
    "append_siblings",
    "appended_nodes",
    "consistency_proof",
    "consistency_proof_nodes",
    "fold",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "open_note",
    "range_nodes",
    "root_from_inclusion_proof",
    "root_hash",
    "root_nodes",
    "root_of",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
]
