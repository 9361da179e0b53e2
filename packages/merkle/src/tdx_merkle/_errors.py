"""The exceptions of tdx-merkle: one base class, one class per edge of the library."""

from __future__ import annotations


class MerkleError(Exception):
    """Base class of every error raised by tdx-merkle."""


class MerkleArgumentError(MerkleError, ValueError):
    """A size, index or hash handed to a proof plan is out of range or malformed.

    The message names the argument and is fit to be shown as a 400 reason.
    """


class MissingNodeError(MerkleError):
    """The `NodeReader` did not return a node the operation asked for (or a malformed hash)."""


class ProofError(MerkleError):
    """An inclusion or consistency proof does not verify; the message says what failed."""


class NoteError(MerkleError, ValueError):
    """A signed note (or a key) is malformed, or its signatures do not verify."""


class CheckpointError(MerkleError, ValueError):
    """A checkpoint body is not in the strict C2SP tlog-checkpoint form."""
