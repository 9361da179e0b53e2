"""The only module that touches pyelftools: reads an ELF's machine type and GNU build ID and
returns plain typed values. pyelftools hands out untyped `Container`s and raises a wide range
of exceptions on malformed input; both stop here."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Final

from elftools.common.exceptions import ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import NoteSegment

from tdx_measure._events import MAX_BUILD_ID_SIZE

ELF_MAGIC: Final = b"\x7fELF"
EXECUTABLE_TYPES: Final = frozenset({"ET_EXEC", "ET_DYN"})

# What pyelftools (and its vendored construct) raise on malformed or truncated input.
_PARSE_ERRORS: Final = (
    ELFError,
    ConstructError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    EOFError,
    OverflowError,
)


class ElfParseFailure(Exception):
    """The stream is not a well-formed ELF executable; the message says why."""


@dataclass(frozen=True)
class ElfIdentity:
    machine: str
    """The e_machine name, e.g. "EM_X86_64"; "EM_UNKNOWN_<n>" for a number pyelftools lacks."""
    build_id: bytes | None


def _build_ids(notes: Iterable[object]) -> Iterator[bytes]:
    for note in notes:
        if not isinstance(note, Mapping):
            raise ElfParseFailure("a note did not parse as a note")
        if note.get("n_name") == "GNU" and note.get("n_type") == "NT_GNU_BUILD_ID":
            desc = note.get("n_descdata")
            if not isinstance(desc, bytes | bytearray) or not desc:
                raise ElfParseFailure("empty or unreadable GNU build-id note")
            if len(desc) > MAX_BUILD_ID_SIZE:
                raise ElfParseFailure(
                    f"a GNU build-id note of {len(desc)} bytes (at most {MAX_BUILD_ID_SIZE})"
                )
            yield bytes(desc)


def _read(stream: BinaryIO) -> ElfIdentity:
    elf = ELFFile(stream)
    elf_type = elf["e_type"]
    if elf_type not in EXECUTABLE_TYPES:
        raise ElfParseFailure(f"ELF type {elf_type} is not an executable or shared object")
    machine = elf["e_machine"]
    machine_name = machine if isinstance(machine, str) else f"EM_UNKNOWN_{int(machine)}"
    # Like `readelf -n`: the note sections when the file has section headers, otherwise the
    # PT_NOTE program segments (a section-stripped binary keeps those, the loader needs them).
    sources: list[NoteSection | NoteSegment]
    if elf.num_sections() > 0:
        sources = [s for s in elf.iter_sections() if isinstance(s, NoteSection)]
    else:
        sources = [s for s in elf.iter_segments() if isinstance(s, NoteSegment)]
    found: set[bytes] = set()
    for source in sources:
        found.update(_build_ids(source.iter_notes()))
    if len(found) > 1:
        raise ElfParseFailure(f"{len(found)} different GNU build IDs in one file")
    return ElfIdentity(machine=machine_name, build_id=found.pop() if found else None)


def read_elf_identity(stream: BinaryIO) -> ElfIdentity:
    """Machine type and GNU build ID of the ELF in `stream` (positioned anywhere; seekable).
    Raises `ElfParseFailure` for anything that is not a well-formed ELF executable; OSError
    from the stream passes through."""
    stream.seek(0)
    if stream.read(len(ELF_MAGIC)) != ELF_MAGIC:
        raise ElfParseFailure("no ELF magic number (\\x7fELF) at the start of the file")
    try:
        return _read(stream)
    except ElfParseFailure:
        raise
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a seek to an offset the file's header made up
            raise ElfParseFailure(f"malformed ELF: an offset past any file ({exc})") from None
        raise
    except _PARSE_ERRORS as exc:
        raise ElfParseFailure(f"malformed ELF: {type(exc).__name__}: {str(exc)[:200]}") from None
