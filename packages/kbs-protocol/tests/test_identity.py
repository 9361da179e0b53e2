"""IdentityEvidence: tdx-identity's additional evidence and the instance key's possession proof."""

from __future__ import annotations

import json
import struct

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_kbs_protocol import IdentityEvidence, MessageError, TeeKeyPair

INSTANCE = Ed25519PrivateKey.generate()
TEE = TeeKeyPair.generate().public
EVENT_LOG = '{"events":[],"version":1}'


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_create_encode_decode_verify() -> None:
    evidence = IdentityEvidence.create(INSTANCE, "bm9uY2U=", TEE, EVENT_LOG)
    assert evidence.instance_pubkey == raw(INSTANCE)
    text = evidence.encode()
    assert json.loads(text) == {
        "event_log": EVENT_LOG,
        "instance_pubkey": raw(INSTANCE).hex(),
        "possession": evidence.possession.hex(),
    }
    assert text == rfc8785.dumps(json.loads(text)).decode()
    decoded = IdentityEvidence.decode(text)
    assert decoded == evidence
    decoded.verify_possession("bm9uY2U=", TEE)


def test_possession_signs_the_documented_bytes() -> None:
    evidence = IdentityEvidence.create(INSTANCE, "abc", TEE, EVENT_LOG)
    jwk = rfc8785.dumps(dict(TEE.jwk))
    message = (
        b"tdx-kbs/instance-possession/v1\n"
        + struct.pack(">I", 3)
        + b"abc"
        + struct.pack(">I", len(jwk))
        + jwk
    )
    Ed25519PublicKey.from_public_bytes(evidence.instance_pubkey).verify(
        evidence.possession, message
    )


def test_wrong_nonce_or_tee_key_is_refused() -> None:
    evidence = IdentityEvidence.create(INSTANCE, "nonce-1", TEE, EVENT_LOG)
    with pytest.raises(MessageError):
        evidence.verify_possession("nonce-2", TEE)
    with pytest.raises(MessageError):
        evidence.verify_possession("nonce-1", TeeKeyPair.generate().public)


def test_another_instance_key_is_refused() -> None:
    evidence = IdentityEvidence.create(INSTANCE, "n", TEE, EVENT_LOG)
    forged = IdentityEvidence(
        instance_pubkey=raw(Ed25519PrivateKey.generate()),
        event_log=EVENT_LOG,
        possession=evidence.possession,
    )
    with pytest.raises(MessageError):
        forged.verify_possession("n", TEE)


def good_json() -> dict[str, object]:
    return json.loads(IdentityEvidence.create(INSTANCE, "n", TEE, EVENT_LOG).encode())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "null",
        "[]",
        "not json",
        json.dumps({**good_json(), "extra": 1}, sort_keys=True, separators=(",", ":")),
        json.dumps(
            {**good_json(), "instance_pubkey": "AB" * 32}, sort_keys=True, separators=(",", ":")
        ),
        json.dumps(
            {**good_json(), "instance_pubkey": "ab" * 31}, sort_keys=True, separators=(",", ":")
        ),
        json.dumps({**good_json(), "possession": "ab" * 63}, sort_keys=True, separators=(",", ":")),
        json.dumps({**good_json(), "possession": 5}, sort_keys=True, separators=(",", ":")),
        json.dumps({**good_json(), "event_log": None}, sort_keys=True, separators=(",", ":")),
        json.dumps({k: v for k, v in good_json().items() if k != "event_log"}),
        json.dumps(good_json()),  # not canonical: spaces after separators
        json.dumps(good_json(), sort_keys=True, separators=(",", ":")) + " ",
        json.dumps(
            {**good_json(), "event_log": "x" * (2 * 1024 * 1024 + 1)},
            sort_keys=True,
            separators=(",", ":"),
        ),
        '{"event_log":NaN,"instance_pubkey":"","possession":""}',
    ],
)
def test_malformed_additional_evidence_is_refused(text: str) -> None:
    with pytest.raises(MessageError):
        IdentityEvidence.decode(text)


def test_lone_surrogate_event_log_is_refused_at_construction() -> None:
    with pytest.raises(MessageError):
        IdentityEvidence.create(INSTANCE, "n", TEE, "\ud800")


nonces = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)


@settings(max_examples=60, deadline=None)
@given(
    pub=st.binary(min_size=32, max_size=32),
    sig=st.binary(min_size=64, max_size=64),
    log=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300),
)
def test_decode_inverts_encode(pub: bytes, sig: bytes, log: str) -> None:
    evidence = IdentityEvidence(instance_pubkey=pub, event_log=log, possession=sig)
    assert IdentityEvidence.decode(evidence.encode()) == evidence


@settings(max_examples=25, deadline=None)
@given(nonce=nonces, log=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=100))
def test_created_evidence_always_encodes_and_verifies(nonce: str, log: str) -> None:
    evidence = IdentityEvidence.create(INSTANCE, nonce, TEE, log)
    IdentityEvidence.decode(evidence.encode()).verify_possession(nonce, TEE)


def test_event_log_that_escapes_past_the_bound_is_refused_at_construction() -> None:
    # 1 MiB of control characters is within the 2 MiB log bound but JSON-escapes sixfold.
    with pytest.raises(MessageError, match="encoded"):
        IdentityEvidence.create(INSTANCE, "n", TEE, "\x01" * (1024 * 1024))
