"""C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint): the note text of a tree head."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ._errors import CheckpointError
from ._hashing import HASH_SIZE

# Tree sizes are uint64 in every implementation of the format.
MAX_TREE_SIZE = (1 << 64) - 1

_MAX_SIZE_DIGITS = len(str(MAX_TREE_SIZE))
_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f]")


def _check_line(what: str, line: str) -> None:
    if not isinstance(line, str) or not line:
        raise CheckpointError(f"the {what} must be a non-empty string")
    if _CONTROL.search(line):
        raise CheckpointError(f"the {what} contains a newline or another control character")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin line, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise CheckpointError("the tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("the tree size must be between 0 and 2**64 - 1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"the root hash must be {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("the extensions must be a tuple of lines")
        for line in self.extensions:
            _check_line("extension line", line)

    def to_text(self) -> str:
        """The note text: origin, size, base64 root, extensions, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii")]
        lines.extend(self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly (as `open_note(...).text` returns it)."""
        if not isinstance(text, str):
            raise CheckpointError("a checkpoint must be a string")
        if not text.endswith("\n"):
            raise CheckpointError("a checkpoint must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("a checkpoint has at least three lines: origin, size, root")
        origin, size_text, root_text, *extensions = lines
        for number, line in enumerate(lines, start=1):
            if not line:
                raise CheckpointError(f"line {number} of the checkpoint is empty")
        if not _SIZE.fullmatch(size_text):
            raise CheckpointError("the tree size is not a decimal number without leading zeros")
        # Length first: int() of a text past its digit limit raises a bare ValueError.
        if len(size_text) > _MAX_SIZE_DIGITS or int(size_text) > MAX_TREE_SIZE:
            raise CheckpointError("the tree size is larger than 2**64 - 1")
        size = int(size_text)
        try:
            root = base64.b64decode(root_text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise CheckpointError("the root hash is not valid base64") from exc
        if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_text:
            raise CheckpointError(f"the root hash is not the base64 of {HASH_SIZE} bytes")
        return cls(origin=origin, size=size, root_hash=root, extensions=tuple(extensions))
