"""`tdxctl registry audit`: check that the registry's append-only Merkle log vouches for an
instance's record, and that the log only grew since the checkpoint remembered last time
(API.md, "Registry: a log anyone can audit"; the leaf is docs/API.md's leaf format).

What the registry says is checked, never taken: the checkpoint opens with the pinned (or
remembered, or first-used) log key and names that key's origin; the record's leaf hashes to
what the tree holds, is canonical JSON, names the instance and carries exactly the record's
audited state; no later leaf names the instance (every later leaf is fetched, hashed and
folded into the proof's right-hand hashes, so the registry cannot leave one out); the
inclusion proof leads to the signed root; the remembered checkpoint is a prefix of this one."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rfc8785

from tdx_merkle import (
    Checkpoint,
    CheckpointError,
    MerkleError,
    NoteError,
    NoteVerifier,
    leaf_hash,
    open_note,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tdxctl._clients import DEFAULT_TIMEOUT, _Http, printable
from tdxctl._errors import (
    AuditStateError,
    BadAnswer,
    CheckpointRejected,
    ConsistencyRejected,
    InclusionRejected,
    LogEntryRejected,
    LogKeyRejected,
    RecordFormatError,
    RecordNotLogged,
)

__all__ = [
    "AUDITED_FIELDS",
    "AuditResult",
    "AuditState",
    "LogClient",
    "audit_instance",
    "audited_state",
    "load_audit_state",
    "parse_verifier_key",
    "write_audit_state",
]

PAGE: Final = 1000
"""The most entries GET /log/entries gives at once (API.md)."""
MAX_PROOF_HASHES: Final = 128
"""An RFC 9162 proof of a tree of fewer than 2**64 leaves has fewer hashes than this."""
CHECKPOINT_READS: Final = 3
"""How often the checkpoint is read while the record's log_index is past its tree (the record
changed between the two reads)."""
MAX_STATE_BYTES: Final = 1024 * 1024
MAX_KEY_TEXT: Final = 16 * 1024
"""The largest `--log-key @FILE` read."""
STATE_VERSION: Final = 1
LEAF_KEYS: Final = frozenset({"v", "instance_pubkey", "time", "changes", "record"})
AUDITED_FIELDS: Final = (
    "ppid",
    "attestation_quote_sha256",
    "operator",
    "owner",
    "verification",
    "rtmr3",
    "event_log_sha256",
    "ssh_host_key",
    "binding_version",
    "challenge",
    "proof_of_possession",
    "registered_at",
)
"""The keys of a leaf's `record`, in the leaf format's order (the order failures are named in)."""
_LOWER_HEX_64: Final = re.compile(r"[0-9a-f]{64}", re.ASCII)


# ---- the log key ---------------------------------------------------------------------------


def parse_verifier_key(text: str) -> NoteVerifier:
    """A C2SP note verifier key (`name+hexid+base64`); `LogKeyRejected` when it is not one."""
    try:
        return NoteVerifier.from_verifier_key(text.strip())
    except (NoteError, ValueError) as exc:
        raise LogKeyRejected(f"not a note verifier key: {printable(str(exc))}") from None


# ---- the state file ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditState:
    """What one successful audit remembers for the next: the log key and origin it trusted,
    and the checkpoint it verified (size, root, the whole signed note)."""

    verifier_key: str
    origin: str
    size: int
    root: bytes
    note: str

    def to_object(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "verifier_key": self.verifier_key,
            "origin": self.origin,
            "checkpoint": {
                "size": self.size,
                "root": base64.b64encode(self.root).decode("ascii"),
                "note": self.note,
            },
        }

    @classmethod
    def from_object(cls, value: Any, where: Path) -> AuditState:
        """The state in `value`, re-verified: its note opens with its key and says its size and
        root. `AuditStateError` naming the problem otherwise."""

        def bad(what: str) -> AuditStateError:
            return AuditStateError(f"the audit state file {where} is not valid: {what}")

        if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
            raise bad(f"not a version {STATE_VERSION} audit state object")
        key, origin, checkpoint = (value.get(k) for k in ("verifier_key", "origin", "checkpoint"))
        if not isinstance(key, str) or not isinstance(origin, str):
            raise bad("verifier_key and origin must be strings")
        if not isinstance(checkpoint, dict):
            raise bad("checkpoint must be an object")
        size, root_text, note = (checkpoint.get(k) for k in ("size", "root", "note"))
        if type(size) is not int or size < 0:
            raise bad("checkpoint.size must be a non-negative integer")
        if not isinstance(root_text, str) or not isinstance(note, str):
            raise bad("checkpoint.root and checkpoint.note must be strings")
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError):
            raise bad("checkpoint.root is not base64") from None
        try:
            verifier = NoteVerifier.from_verifier_key(key)
            parsed = Checkpoint.parse(open_note(note, [verifier]).text)
        except (NoteError, CheckpointError, ValueError) as exc:
            raise bad(f"its checkpoint does not verify: {printable(str(exc))}") from None
        if (
            verifier.name != origin
            or parsed.origin != origin
            or parsed.size != size
            or not hmac.compare_digest(parsed.root_hash, root)
        ):
            raise bad("its checkpoint note does not say its origin, size and root")
        return cls(verifier_key=key, origin=origin, size=size, root=root, note=note)


def load_audit_state(path: Path) -> AuditState | None:
    """The state in `path`, or None when there is no such file (a first audit). Read without
    following a link; refused when it is not a regular file, belongs to another user, or others
    may write it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditStateError(f"cannot open the audit state file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AuditStateError(f"the audit state file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            # Its owner may rewrite the remembered log key and checkpoint, whatever the mode.
            raise AuditStateError(
                f"the audit state file {path} belongs to uid {info.st_uid}, not to this user"
            )
        if info.st_mode & 0o022:
            raise AuditStateError(
                f"the audit state file {path} is writable by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise AuditStateError(f"cannot read the audit state file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        raise AuditStateError(f"the audit state file {path} is larger than 1 MiB")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AuditStateError(f"the audit state file {path} is not JSON") from None
    return AuditState.from_object(value, path)


def write_audit_state(path: Path, state: AuditState) -> None:
    """Replace `path` with `state` atomically: a new 0600 file written and fsynced under a
    temporary name in the same directory, renamed over `path`, then the directory fsynced."""
    directory = path.parent
    data = (json.dumps(state.to_object(), indent=2, sort_keys=True) + "\n").encode("utf-8")
    temp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise AuditStateError(f"cannot create a file in {directory}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise AuditStateError(f"cannot write the audit state file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


# ---- audited_state (leaf format) -------------------------------------------------------------


def audited_state(wire: Any) -> dict[str, Any]:
    """The leaf format's `audited_state` of a GET /instance answer, computed from it alone;
    `RecordFormatError` naming a field that is missing or of the wrong type."""
    if not isinstance(wire, dict):
        raise RecordFormatError("the registry record is not a JSON object")

    def field(name: str) -> Any:
        if name not in wire:
            raise RecordFormatError(f"the registry record has no {name!r}")
        return wire[name]

    quote = field("attestation_quote")
    if not isinstance(quote, str):
        raise RecordFormatError("the record's attestation_quote is not a base64 string")
    try:
        quote_bytes = base64.b64decode(quote, validate=True)
    except (binascii.Error, ValueError):
        raise RecordFormatError("the record's attestation_quote is not base64") from None
    verification = field("verification")
    if not isinstance(verification, dict):
        raise RecordFormatError("the record's verification is not an object")
    event_log = field("event_log")
    if event_log is not None and not isinstance(event_log, str):
        raise RecordFormatError("the record's event_log is not a string or null")
    try:
        event_log_sha256 = (
            None if event_log is None else hashlib.sha256(event_log.encode("utf-8")).hexdigest()
        )
    except UnicodeEncodeError:
        raise RecordFormatError("the record's event_log is not encodable as UTF-8") from None
    return {
        "ppid": field("ppid"),
        "attestation_quote_sha256": hashlib.sha256(quote_bytes).hexdigest(),
        "operator": field("operator"),
        "owner": field("owner"),
        "verification": {
            k: v for k, v in verification.items() if k not in ("verified_at", "history")
        },
        "rtmr3": field("rtmr3"),
        "event_log_sha256": event_log_sha256,
        "ssh_host_key": field("ssh_host_key"),
        "binding_version": field("binding_version"),
        "challenge": field("challenge"),
        "proof_of_possession": field("proof_of_possession"),
        "registered_at": field("registered_at"),
    }


def _canonical(value: Any) -> bytes | None:
    """RFC 8785 bytes of `value`, None when it has none (a float out of range, a lone
    surrogate...)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, UnicodeError, RecursionError):
        return None


# ---- the log client ------------------------------------------------------------------------


def _int(obj: dict[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    if type(value) is not int or value < 0:
        raise BadAnswer(f"{what} has no non-negative integer {name!r}")
    return value


def _hashes(answer: Any, what: str) -> list[bytes]:
    if not isinstance(answer, dict):
        raise BadAnswer(f"{what} is not a JSON object")
    items = answer.get("hashes")
    if not isinstance(items, list) or len(items) > MAX_PROOF_HASHES:
        raise BadAnswer(f"{what} has no list of at most {MAX_PROOF_HASHES} 'hashes'")
    out: list[bytes] = []
    for item in items:
        if not isinstance(item, str):
            raise BadAnswer(f"{what} has a hash that is not a base64 string")
        try:
            digest = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise BadAnswer(f"{what} has a hash that is not base64") from None
        if len(digest) != 32:
            raise BadAnswer(f"{what} has a hash that is not 32 bytes")
        out.append(digest)
    return out


@dataclass(frozen=True)
class LogEntry:
    """One leaf as GET /log/entries gives it (not yet checked against its hash)."""

    index: int
    leaf_hash: bytes
    entry: str


class LogClient:
    """The registry's /log routes and GET /instance/{pubkey} as raw JSON. Use as `async with`.
    Answers are decoded strictly (bounded reads, typed fields) and checked by `audit_instance`."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._http = _Http("registry", base_url, timeout=timeout, transport=None)

    async def __aenter__(self) -> LogClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def public_key(self) -> str:
        """GET /log/public-key: the note verifier key text, surrounding whitespace removed."""
        return (await self._http.call_text("/log/public-key")).strip()

    async def checkpoint(self) -> str:
        """GET /log/checkpoint: the signed note text, as served."""
        return await self._http.call_text("/log/checkpoint")

    async def record(self, instance: bytes) -> Any:
        """GET /instance/{pubkey}: the record's JSON, undecoded."""
        return await self._http.call("GET", f"/instance/{instance.hex()}")

    async def entries(self, start: int, end: int) -> list[LogEntry]:
        """GET /log/entries?start=&end=: the leaves from `start` on, at least one and at most
        `end - start`, with consecutive indices."""
        what = f"the registry's /log/entries answer from {start}"
        answer = await self._http.call(
            "GET", "/log/entries", params={"start": str(start), "end": str(end)}
        )
        items = answer.get("entries") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise BadAnswer(f"{what} has no 'entries' list")
        if not 1 <= len(items) <= end - start:
            raise BadAnswer(f"{what} has {len(items)} entries for {end - start} asked")
        out: list[LogEntry] = []
        for offset, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadAnswer(f"{what} has an entry that is not an object")
            if _int(item, "index", what) != start + offset:
                raise BadAnswer(
                    f"{what} gives entry {item['index']} where {start + offset} belongs"
                )
            text, digest = item.get("entry"), item.get("leaf_hash")
            if not isinstance(text, str) or not isinstance(digest, str):
                raise BadAnswer(f"{what} has an entry without 'entry' and 'leaf_hash' strings")
            try:
                hashed = base64.b64decode(digest, validate=True)
            except (binascii.Error, ValueError):
                raise BadAnswer(f"{what} has a leaf_hash that is not base64") from None
            out.append(LogEntry(index=start + offset, leaf_hash=hashed, entry=text))
        return out

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """GET /log/proof/inclusion?index=&tree_size=: the audit path (leaf to root)."""
        what = f"the registry's inclusion proof of leaf {index}"
        answer = await self._http.call(
            "GET", "/log/proof/inclusion", params={"index": str(index), "tree_size": str(size)}
        )
        hashes = _hashes(answer, what)
        if _int(answer, "leaf_index", what) != index or _int(answer, "tree_size", what) != size:
            raise InclusionRejected(f"{what} in a tree of {size} is for another leaf or size")
        return hashes

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """GET /log/proof/consistency?first=&second=."""
        what = f"the registry's consistency proof from {first} to {second}"
        answer = await self._http.call(
            "GET", "/log/proof/consistency", params={"first": str(first), "second": str(second)}
        )
        hashes = _hashes(answer, what)
        if _int(answer, "first", what) != first or _int(answer, "second", what) != second:
            raise ConsistencyRejected(f"{what} is for other sizes")
        return hashes


# ---- the audit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """A passed audit: what it verified, and the state to remember."""

    instance: bytes
    log_index: int
    tree_size: int
    root: bytes
    consistent_with_previous: bool | None
    """True when a remembered checkpoint was checked; None on a first audit."""
    trust_on_first_use: bool
    state: AuditState

    def to_object(self) -> dict[str, Any]:
        return {
            "instance": self.instance.hex(),
            "log_index": self.log_index,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "consistent_with_previous": self.consistent_with_previous,
            "trust_on_first_use": self.trust_on_first_use,
            "origin": self.state.origin,
        }


Progress = Callable[[int, int], None]
"""Called as (leaves scanned, leaves to scan) during a long scan."""


def _path_sides(index: int, size: int) -> list[tuple[bool, int, int]]:
    """For each hash of the RFC 9162 audit path of leaf `index` in a tree of `size` (leaf to
    root): (is a right sibling, first leaf, end leaf) of the subtree it is the hash of."""
    sides: list[tuple[bool, int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # the largest power of two < hi - lo
        if index < lo + k:
            sides.append((True, lo + k, hi))
            hi = lo + k
        else:
            sides.append((False, lo, lo + k))
            lo = lo + k
    sides.reverse()
    return sides


def _is_one(value: Any) -> bool:
    return type(value) is int and value == 1


def _check_entry(entry: LogEntry) -> dict[str, Any]:
    """The leaf object of `entry`, after checking its hash, its canonical encoding and its v1
    shape; `LogEntryRejected` otherwise."""
    where = f"log leaf {entry.index}"
    data = entry.entry.encode("utf-8", errors="surrogatepass")
    if not hmac.compare_digest(entry.leaf_hash, leaf_hash(data)):
        raise LogEntryRejected(f"the leaf_hash of {where} is not the hash of its entry")
    try:
        value = json.loads(entry.entry)
    except (ValueError, RecursionError):
        raise LogEntryRejected(f"{where} is not JSON") from None
    if _canonical(value) != data:
        raise LogEntryRejected(f"{where} is not canonical JSON (RFC 8785)")
    if not isinstance(value, dict) or set(value) != LEAF_KEYS or not _is_one(value["v"]):
        raise LogEntryRejected(f"{where} is not a version 1 leaf")
    pubkey = value["instance_pubkey"]
    if not isinstance(pubkey, str) or _LOWER_HEX_64.fullmatch(pubkey) is None:
        raise LogEntryRejected(f"{where} names no instance (64 lower-case hex)")
    changes = value["changes"]
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise LogEntryRejected(f"{where} has no list of changes")
    if not isinstance(value["time"], str) or not isinstance(value["record"], dict):
        raise LogEntryRejected(f"{where} has no time string or record object")
    return value


def _compare_record(leaf_record: dict[str, Any], audited: dict[str, Any], index: int) -> None:
    """`RecordNotLogged` naming the first field (in the leaf format's order) where the registry's
    record differs from its log leaf."""
    for name in AUDITED_FIELDS:
        if name not in leaf_record:
            raise RecordNotLogged(f"log leaf {index} has no record field {name!r}")
        served = _canonical(audited[name])
        if served is None or served != _canonical(leaf_record[name]):
            raise RecordNotLogged(f"the record's {name} differs from its log leaf {index}")
    extra = sorted(set(leaf_record) - set(AUDITED_FIELDS))
    if extra:
        raise RecordNotLogged(
            f"log leaf {index} records fields the registry's record lacks: "
            + ", ".join(printable(e, 40) for e in extra[:5])
        )


async def _open_checkpoint(log: LogClient, verifier: NoteVerifier) -> tuple[str, Checkpoint]:
    note = await log.checkpoint()
    try:
        opened = open_note(note, [verifier])
    except NoteError as exc:
        raise CheckpointRejected(
            f"the checkpoint's note does not open with the log key: {printable(str(exc))}"
        ) from None
    try:
        checkpoint = Checkpoint.parse(opened.text)
    except CheckpointError as exc:
        raise CheckpointRejected(f"the checkpoint is malformed: {printable(str(exc))}") from None
    if checkpoint.origin != verifier.name:
        raise CheckpointRejected(
            f"the checkpoint's origin {printable(checkpoint.origin, 80)!r} is not the log key's "
            f"name {printable(verifier.name, 80)!r}"
        )
    return note, checkpoint


async def _scan_later(
    log: LogClient,
    instance_hex: str,
    start: int,
    size: int,
    progress: Progress | None,
) -> list[bytes]:
    """The leaf hashes of leaves `start`..`size - 1`, each checked (hash, encoding), none naming
    the instance; `RecordNotLogged` naming the first that does."""
    hashes: list[bytes] = []
    position = start
    while position < size:
        page = await log.entries(position, min(position + PAGE, size))
        for entry in page:
            value = _check_entry(entry)
            if hmac.compare_digest(value["instance_pubkey"], instance_hex):
                raise RecordNotLogged(
                    f"log leaf {entry.index} is a later change of the instance: the registry "
                    "serves a stale record"
                )
            hashes.append(entry.leaf_hash)
        position += len(page)
        if progress is not None:
            progress(position - start, size - start)
    return hashes


async def audit_instance(
    log: LogClient,
    instance: bytes,
    *,
    previous: AuditState | None,
    pinned_key: str | None,
    progress: Progress | None = None,
) -> AuditResult:
    """Audit the registry's record of `instance` against its log (the module's docstring);
    `previous` is the remembered state (None on a first audit), `pinned_key` the caller's
    verifier key text (None: the remembered one, else trust the served one on first use).
    Raises a `LogAuditFailed` (or a `RequestError`) naming the first failure."""
    if len(instance) != 32:
        raise RecordFormatError("an instance key is 32 bytes")
    instance_hex = instance.hex()

    # 1. the log key
    trusted = pinned_key.strip() if pinned_key is not None else None
    if trusted is not None and previous is not None and trusted != previous.verifier_key:
        raise LogKeyRejected(
            "the pinned --log-key is not the key remembered in the state file; audit a log "
            "under a new key with a new state file"
        )
    if trusted is None and previous is not None:
        trusted = previous.verifier_key
    served = await log.public_key()
    if trusted is not None and served != trusted:
        raise LogKeyRejected(
            f"the registry serves the log key {printable(served, 120)!r}, not the trusted "
            f"{printable(trusted, 120)!r}"
        )
    verifier = parse_verifier_key(served)
    if previous is not None and verifier.name != previous.origin:
        raise LogKeyRejected("the log key names another origin than the remembered one")

    # 2. the checkpoint, then 3. the record (read after it: a record read later is at least
    # as new as the checkpoint's tree, whose size must then cover its log_index; a record that
    # changed in between points past that tree, so a newer checkpoint is read, a few times)
    for attempt in range(1, CHECKPOINT_READS + 1):
        note, checkpoint = await _open_checkpoint(log, verifier)
        size, root = checkpoint.size, checkpoint.root_hash
        wire = await log.record(instance)
        audited = audited_state(wire)
        if wire.get("instance_pubkey") != instance_hex:
            raise RecordFormatError("the registry answered with the record of another instance")
        index = wire.get("log_index")
        if type(index) is not int or index < 0:
            raise RecordFormatError("the registry's record has no log_index (does it keep a log?)")
        if index < size:
            break
        if attempt == CHECKPOINT_READS:
            raise RecordNotLogged(
                f"the record's log_index {index} is not in the checkpoint's tree of {size} "
                f"leaves (checkpoint read {CHECKPOINT_READS} times)"
            )
    (entry,) = await log.entries(index, index + 1)
    value = _check_entry(entry)
    if not hmac.compare_digest(value["instance_pubkey"], instance_hex):
        raise LogEntryRejected(f"log leaf {index}, the record's log_index, names another instance")
    _compare_record(value["record"], audited, index)

    # 4. inclusion of the leaf under the signed root
    proof = await log.inclusion_proof(index, size)
    try:
        verify_inclusion(entry.leaf_hash, index, size, proof, root)
    except MerkleError as exc:
        raise InclusionRejected(
            f"the inclusion proof of leaf {index} does not lead to the checkpoint's root: "
            f"{printable(str(exc))}"
        ) from None

    # 5. no later leaf of the instance: every later leaf, folded, must give the proof's
    # right-hand hashes (which the verified proof binds to the root), so none can be left out
    later = await _scan_later(log, instance_hex, index + 1, size, progress)
    for (right, lo, hi), given in zip(_path_sides(index, size), proof, strict=True):
        if right and not hmac.compare_digest(
            root_of(later[lo - index - 1 : hi - index - 1]), given
        ):
            raise InclusionRejected(
                f"the log's leaves {lo}..{hi - 1} as served are not the tree's: the registry "
                "leaves something out of /log/entries"
            )

    # 6. consistency with the remembered checkpoint
    consistent: bool | None = None
    if previous is not None:
        if previous.size > size:
            raise ConsistencyRejected(
                f"the log shrank from {previous.size} leaves (remembered) to {size}"
            )
        if previous.size == size:
            if not hmac.compare_digest(previous.root, root):
                raise ConsistencyRejected(
                    f"the log's root at size {size} is not the remembered one: history was "
                    "rewritten"
                )
        elif previous.size > 0:
            consistency = await log.consistency_proof(previous.size, size)
            try:
                verify_consistency(previous.size, size, previous.root, root, consistency)
            except MerkleError as exc:
                raise ConsistencyRejected(
                    f"the log of {size} leaves is not an extension of the remembered one of "
                    f"{previous.size}: {printable(str(exc))}"
                ) from None
        consistent = True

    return AuditResult(
        instance=instance,
        log_index=index,
        tree_size=size,
        root=root,
        consistent_with_previous=consistent,
        trust_on_first_use=pinned_key is None and previous is None,
        state=AuditState(
            verifier_key=served, origin=verifier.name, size=size, root=root, note=note
        ),
    )
