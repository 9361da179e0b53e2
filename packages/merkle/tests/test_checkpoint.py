"""C2SP tlog-checkpoint bodies: the spec's example, round trips, strict refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_merkle import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign_note,
)

VECTORS = Path(__file__).parent / "vectors" / "notes.json"
ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()


def test_spec_example_parses() -> None:
    case = json.loads(VECTORS.read_text(encoding="utf-8"))["c2sp_checkpoint_example"]
    note: str = case["note"]
    body = note[: note.rfind("\n\n") + 1]
    checkpoint = Checkpoint.parse(body)
    assert checkpoint.origin == case["origin"]
    assert checkpoint.size == case["size"]
    assert checkpoint.root_hash == base64.b64decode(case["root_hash_b64"])
    assert checkpoint.extensions == ()
    assert checkpoint.to_text() == body


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1),
        max_size=3,
    ),
)
def test_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint


def test_signed_checkpoint_round_trip() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = NoteSigner("log.example/tdx", Ed25519PrivateKey.generate())
    checkpoint = Checkpoint("log.example/tdx", 42, ROOT, ("ext one",))
    note = sign_note(checkpoint.to_text(), [signer])
    opened = open_note(note, [NoteVerifier.from_verifier_key(signer.verifier_key())])
    assert Checkpoint.parse(opened.text) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        f"o\n1\n{ROOT_B64}",  # no final newline
        "o\n1\n",  # two lines
        f"\n1\n{ROOT_B64}\n",  # empty origin
        f"o\n01\n{ROOT_B64}\n",  # leading zero
        f"o\n00\n{ROOT_B64}\n",
        f"o\n+1\n{ROOT_B64}\n",
        f"o\n-1\n{ROOT_B64}\n",
        f"o\n 1\n{ROOT_B64}\n",
        f"o\n1.0\n{ROOT_B64}\n",
        f"o\n\u0661\n{ROOT_B64}\n",  # Arabic-Indic digit one
        f"o\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n",
        f"o\n{'9' * 5000}\n{ROOT_B64}\n",  # past int()'s digit limit: not a bare ValueError
        f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n",  # 31-byte root
        f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n",
        f"o\n1\n{ROOT_B64.rstrip('=')}\n",  # unpadded
        f"o\n1\n{ROOT_B64[:-2]}!=\n",
        f"o\n1\n{ROOT_B64}\n\next\n",  # blank line inside the body
        f"o\n1\n{ROOT_B64}\n\n",  # trailing blank line
        f"o\n1\n\n{ROOT_B64}\n",
        f"o\tx\n1\n{ROOT_B64}\n",  # control character
    ],
)
def test_refusals(text: str) -> None:
    with pytest.raises(CheckpointError) as info:
        Checkpoint.parse(text)
    assert type(info.value) is CheckpointError


def test_constructor_refusals() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("", 1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o\nx", 1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, ROOT[:31])
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, ROOT, ("",))
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, ROOT, ("a\nb",))
