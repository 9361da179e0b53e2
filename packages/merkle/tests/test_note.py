"""C2SP signed notes: the spec's example and golang.org/x/mod/sumdb/note's vectors (see
vectors/NOTICE), our signer reproducing them, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_merkle import (
    MAX_SIGNATURES,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign_note,
)

VECTORS = Path(__file__).parent / "vectors" / "notes.json"


def _vectors() -> dict[str, Any]:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


GO = _vectors()["go_sumdb_note"]
C2SP = _vectors()["c2sp_signed_note_example"]


def test_c2sp_example_verifies() -> None:
    verifier = NoteVerifier.from_verifier_key(C2SP["verifier_key"])
    assert verifier.name == "example.com/foo"
    assert verifier.key_id == 0x530D903A
    assert verifier.verifier_key() == C2SP["verifier_key"]
    opened = open_note(C2SP["note"], [verifier])
    assert opened.text == C2SP["text"]
    assert opened.verified_names == ("example.com/foo",)


def test_c2sp_example_mutated_text_is_refused() -> None:
    verifier = NoteVerifier.from_verifier_key(C2SP["verifier_key"])
    note: str = C2SP["note"]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace("example message", "example massage"), [verifier])


def test_go_signer_reproduces_the_signature() -> None:
    signer = NoteSigner.from_signer_key(GO["signer_key"])
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.signer_key() == GO["signer_key"]
    assert signer.verifier_key() == GO["verifier_key"]
    assert sign_note(GO["text"], [signer]) == GO["text"] + "\n" + GO["signature_line"]
    assert "AYEKFALV" not in repr(signer)


def test_go_open_one_known_one_unknown() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    enoch = NoteVerifier.from_verifier_key(GO["other_verifier_key"])
    note = GO["text"] + "\n" + GO["signature_line"] + GO["other_signature_line"]
    assert open_note(note, [peter]).verified_names == ("PeterNeumann",)
    assert open_note(note, [peter, enoch]).verified_names == ("PeterNeumann", "EnochRoot")
    assert open_note(note, [enoch]).text == GO["text"]
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        open_note(note, [])


def test_go_duplicated_and_unknown_mangled_signatures() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    sig, other = GO["signature_line"], GO["other_signature_line"]
    note = GO["text"] + "\n" + sig + sig + other + other + other[:60] + "ABCD" + other[60:]
    assert open_note(note, [peter]).verified_names == ("PeterNeumann",)


def test_go_invalid_signature_rejects_the_note() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    enoch = NoteVerifier.from_verifier_key(GO["other_verifier_key"])
    sig = GO["signature_line"]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO["text"] + "\n" + sig[:60] + "ABCD" + sig[60:], [peter])
    # A bad signature from a known key refuses the note even when another one verifies.
    bad_other = GO["other_signature_line"].replace("rwz+eBzm", "rwz+eBzn")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO["text"] + "\n" + sig + bad_other, [peter, enoch])


def test_go_too_many_signatures() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    note = GO["text"] + "\n" + GO["signature_line"] * (MAX_SIGNATURES + 1)
    with pytest.raises(NoteError, match="more than"):
        open_note(note, [peter])
    with pytest.raises(NoteError, match="more than"):
        open_note(note, [])
    # At least 16 are accepted, as the spec requires.
    assert open_note(GO["text"] + "\n" + GO["signature_line"] * 16, [peter]).text == GO["text"]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda text, sig: text,
        lambda text, sig: text + "\n",
        lambda text, sig: text + "\n" + sig[:-1],
        lambda text, sig: "\x01" + text + "\n" + sig,
        lambda text, sig: text + "\n" + "\u2014 Bad Name " + sig.split(" ")[-1],
        lambda text, sig: text + "\n" + sig + "Unexpected line.\n",
        lambda text, sig: text + "\n" + sig.replace("\u2014", "-"),
        lambda text, sig: text + "\n" + sig.replace("=\n", "\n"),
        lambda text, sig: text + "\n" + "\u2014 PeterNeumann AAAA\n",
        lambda text, sig: "\ud800" + text + "\n" + sig,
    ],
)
def test_go_malformed_notes(mangle: Any) -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    with pytest.raises(NoteError):
        open_note(mangle(GO["text"], GO["signature_line"]), [peter])


def test_go_verifier_key_manglings() -> None:
    vkey: str = GO["verifier_key"]
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if i == 0 and j == len(vkey):
                continue
            with pytest.raises(NoteError):
                NoteVerifier.from_verifier_key(vkey[i:j])
    for i in range(len(vkey)):
        mangled = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(NoteError):
            NoteVerifier.from_verifier_key(mangled)
    for bad in GO["bad_verifier_keys"]:
        with pytest.raises(NoteError):
            NoteVerifier.from_verifier_key(bad)


def test_go_signer_key_manglings() -> None:
    skey: str = GO["signer_key"]
    for i in range(len(skey) + 1):
        for j in range(i + 1, len(skey) + 1):
            if i == 0 and j == len(skey):
                continue
            with pytest.raises(NoteError):
                NoteSigner.from_signer_key(skey[i:j])
    for i in range(len(skey)):
        mangled = skey[:i] + chr(ord(skey[i]) + 1) + skey[i + 1 :]
        with pytest.raises(NoteError):
            NoteSigner.from_signer_key(mangled)


def test_the_same_trusted_key_twice_is_not_ambiguous() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    note = GO["text"] + "\n" + GO["signature_line"]
    assert open_note(note, [peter, peter]).verified_names == ("PeterNeumann",)


def test_two_trusted_keys_with_one_name_and_id_are_ambiguous() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    # A 32-bit key ID collision is cheap for an attacker; forge one by hand here.
    impostor = NoteVerifier("PeterNeumann", Ed25519PrivateKey.generate().public_key())
    impostor.key_id = peter.key_id
    note = GO["text"] + "\n" + GO["signature_line"]
    with pytest.raises(NoteError, match="two different trusted keys"):
        open_note(note, [peter, impostor])


def test_fresh_key_round_trip_and_refusals() -> None:
    signer = NoteSigner("log.example/tdx", Ed25519PrivateKey.generate())
    again = NoteSigner.from_signer_key(signer.signer_key())
    assert again.verifier_key() == signer.verifier_key()
    verifier = NoteVerifier.from_verifier_key(signer.verifier_key())
    note = sign_note("hello\n\nworld\n", [signer])
    opened = open_note(note, [verifier])
    assert opened.text == "hello\n\nworld\n"
    stranger = NoteSigner("log.example/tdx", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        open_note(sign_note("hello\n", [stranger]), [verifier])
    with pytest.raises(NoteError, match="end in a newline"):
        sign_note("no newline", [signer])
    with pytest.raises(NoteError, match="control character"):
        sign_note("tab\there\n", [signer])
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("x\n", [])
    for name in ("", "a b", "a+b", "a\u00a0b"):
        with pytest.raises(NoteError):
            NoteSigner(name, Ed25519PrivateKey.generate())


def test_every_one_character_change_of_the_text_is_refused() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    text: str = GO["text"]
    for i in range(len(text) - 1):  # the final newline: see the next test
        mangled = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1 :]
        with pytest.raises(NoteError):
            open_note(mangled + "\n" + GO["signature_line"], [peter])


def test_a_signature_moved_to_another_text_is_refused() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    for text in (GO["text"] + "more\n", GO["text"][:-1] + " \n", "x\n" + GO["text"]):
        with pytest.raises(NoteError, match="does not verify"):
            open_note(text + "\n" + GO["signature_line"], [peter])


def test_every_one_character_change_of_the_signature_is_refused() -> None:
    peter = NoteVerifier.from_verifier_key(GO["verifier_key"])
    line: str = GO["signature_line"]
    start = line.rindex(" ") + 1
    for i in range(start, len(line) - 2):  # the base64, but not its "=" padding
        mangled = line[:i] + ("A" if line[i] != "A" else "B") + line[i + 1 :]
        # A changed key ID makes the signature an unknown key's: then none is trusted.
        with pytest.raises(NoteError):
            open_note(GO["text"] + "\n" + mangled, [peter])
