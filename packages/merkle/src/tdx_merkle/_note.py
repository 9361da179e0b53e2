"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys (signature type 0x01)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._errors import NoteError

ED25519_TYPE = 0x01
KEY_ID_SIZE = 4
ED25519_SIGNATURE_SIZE = 64

# The spec asks verifiers to accept at least 16; golang.org/x/mod/sumdb/note accepts 100.
MAX_SIGNATURES = 100

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"

# ASCII control characters other than newline (the spec forbids them anywhere in a note).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise NoteError("a key name must be a non-empty string")
    if "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name):
        raise NoteError(f"key name {name!r} contains a space, a plus or a control character")


def _key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()
    return int.from_bytes(digest[:KEY_ID_SIZE], "big")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: the alphabet, padding, and the canonical encoding only."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key_id(text: str) -> int:
    if not _KEY_ID_HEX.fullmatch(text):
        raise NoteError("a key ID must be 8 lowercase hex digits")
    return int(text, 16)


class NoteVerifier:
    """An Ed25519 verifier key: the name, key ID and public key of a note signer."""

    __slots__ = ("_public", "_public_raw", "key_id", "name")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self.name = name
        self._public = public_key
        self._public_raw = _public_bytes(public_key)
        self.key_id = _key_id(name, self._public_raw)

    @classmethod
    def from_verifier_key(cls, text: str) -> NoteVerifier:
        """Parse `<name>+<hex key id>+<base64(0x01 || public key)>`."""
        parts = text.split("+", 2) if isinstance(text, str) else []
        if len(parts) != 3:
            raise NoteError("a verifier key has three parts: name+keyid+key")
        name, id_hex, key_b64 = parts
        _check_name(name)
        key_id = _parse_key_id(id_hex)
        raw = _b64decode(key_b64, "the verifier key")
        if len(raw) != 1 + 32 or raw[0] != ED25519_TYPE:
            raise NoteError("the verifier key is not an Ed25519 (type 0x01) key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != key_id:
            raise NoteError("the verifier key's ID does not match its name and key")
        return verifier

    def verifier_key(self) -> str:
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self._public_raw).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"NoteVerifier({self.verifier_key()!r})"


class NoteSigner:
    """An Ed25519 note signer. Its `repr` never shows the private key."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._verifier = NoteVerifier(name, key.public_key())

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    def verifier(self) -> NoteVerifier:
        return self._verifier

    def verifier_key(self) -> str:
        """`<name>+<8 hex key id>+<base64(0x01 || public key)>`."""
        return self._verifier.verifier_key()

    def signer_key(self) -> str:
        """`PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`: a secret, never log it."""
        seed = self._key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + seed).decode("ascii")
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{encoded}"

    @classmethod
    def from_signer_key(cls, text: str) -> NoteSigner:
        """Parse a `signer_key()` string. Error messages never echo the key material."""
        if not isinstance(text, str) or not text.startswith(PRIVATE_KEY_PREFIX):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        parts = text[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteError("a signer key has the form PRIVATE+KEY+name+keyid+key")
        name, id_hex, key_b64 = parts
        _check_name(name)
        key_id = _parse_key_id(id_hex)
        raw = _b64decode(key_b64, "the signer key")
        if len(raw) != 1 + 32 or raw[0] != ED25519_TYPE:
            raise NoteError("the signer key is not an Ed25519 (type 0x01) seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != key_id:
            raise NoteError("the signer key's ID does not match its name and key")
        return signer

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """An opened note: its text and the names of the known keys whose signatures verified."""

    text: str
    verified_names: tuple[str, ...]


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise NoteError("the note text must be a string")
    if not text.endswith("\n"):
        raise NoteError("the note text must end in a newline")
    if _CONTROL.search(text):
        raise NoteError("the note text contains a control character other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("the note text is not valid UTF-8 (lone surrogate)") from exc


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note: `text`, a blank line, one `— name base64(id || sig)` line per signer."""
    _check_text(text)
    if not signers:
        raise NoteError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signers")
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        blob = signer.key_id.to_bytes(KEY_ID_SIZE, "big") + signer.sign(message)
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode('ascii')}\n")
    return text + "\n" + "".join(lines)


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> SignedNote:
    """Parse `note` and verify it against the trusted `verifiers` (C2SP signed-note rules).

    Signatures from unknown keys (name and key ID not both known) are ignored; a signature
    from a known key that fails to verify rejects the whole note; at least one must verify.
    """
    if not isinstance(note, str):
        raise NoteError("a note must be a string")
    if _CONTROL.search(note):
        raise NoteError("the note contains a control character other than newline")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("the note is not valid UTF-8 (lone surrogate)") from exc
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("the note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("the note's last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")

    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for verifier in verifiers:
        same = known.setdefault((verifier.name, verifier.key_id), [])
        if all(v._public_raw != verifier._public_raw for v in same):
            same.append(verifier)

    message = text.encode("utf-8")
    verified: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"signature line {number} does not start with an em dash and space")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise NoteError(f"signature line {number} is not '— <name> <signature>'")
        name, sig_b64 = fields
        _check_name(name)
        blob = _b64decode(sig_b64, f"signature {number}")
        if len(blob) <= KEY_ID_SIZE:
            raise NoteError(f"signature {number} is too short")
        key_id = int.from_bytes(blob[:KEY_ID_SIZE], "big")
        candidates = known.get((name, key_id))
        if candidates is None:
            continue  # an unknown key: ignored, as the spec requires
        if len(candidates) > 1:
            raise NoteError(f"two different trusted keys are named {name}+{key_id:08x}")
        if not candidates[0].verify(message, blob[KEY_ID_SIZE:]):
            raise NoteError(f"the signature of {name}+{key_id:08x} does not verify")
        if name not in verified:
            verified.append(name)
    if not verified:
        raise NoteError("no signature from a trusted key")
    return SignedNote(text=text, verified_names=tuple(verified))
