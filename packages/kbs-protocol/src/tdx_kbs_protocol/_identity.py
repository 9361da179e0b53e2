"""tdx-identity's additional evidence: the instance key, its event log and a proof of possession."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tdx_kbs_protocol._codec import expect_object, expect_str, jcs, loads_object
from tdx_kbs_protocol._errors import MessageError
from tdx_kbs_protocol._messages import MAX_ADDITIONAL_EVIDENCE_CHARS, TeePublicKey, _nonce

POSSESSION_DOMAIN: Final = b"tdx-kbs/instance-possession/v1\n"
MAX_EVENT_LOG_BYTES: Final = 2 * 1024 * 1024
_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{128}")
_MEMBERS: Final = frozenset({"instance_pubkey", "event_log", "possession"})


def possession_message(nonce: str, tee_pubkey: TeePublicKey) -> bytes:
    """The bytes the instance key signs: domain || u32be len || nonce || u32be len || JCS(jwk)."""
    nonce_bytes = _nonce(nonce, "nonce").encode("ascii")
    jwk = tee_pubkey.canonical()
    return (
        POSSESSION_DOMAIN
        + struct.pack(">I", len(nonce_bytes))
        + nonce_bytes
        + struct.pack(">I", len(jwk))
        + jwk
    )


@dataclass(frozen=True)
class IdentityEvidence:
    """The ``additional_evidence`` tdx-identity guests send (a tdx-kbs extension)."""

    instance_pubkey: bytes
    event_log: str
    possession: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.instance_pubkey, bytes) or len(self.instance_pubkey) != 32:
            raise MessageError("instance_pubkey is not 32 bytes")
        if not isinstance(self.possession, bytes) or len(self.possession) != 64:
            raise MessageError("possession is not 64 bytes")
        expect_str(self.event_log, what="event_log", max_len=MAX_EVENT_LOG_BYTES)
        if len(self.event_log.encode("utf-8")) > MAX_EVENT_LOG_BYTES:
            raise MessageError(f"event_log is longer than {MAX_EVENT_LOG_BYTES} bytes")
        # JSON escaping can grow the log up to sixfold: keep every valid value decodable.
        if len(self.encode()) > MAX_ADDITIONAL_EVIDENCE_CHARS:
            raise MessageError(
                f"encoded additional_evidence is over {MAX_ADDITIONAL_EVIDENCE_CHARS} characters"
            )

    @classmethod
    def create(
        cls,
        instance_key: Ed25519PrivateKey,
        nonce: str,
        tee_pubkey: TeePublicKey,
        event_log: str,
    ) -> IdentityEvidence:
        """Sign the possession message with the instance key and bundle the event log."""
        signature = instance_key.sign(possession_message(nonce, tee_pubkey))
        pub = instance_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(instance_pubkey=pub, event_log=event_log, possession=signature)

    def to_json(self) -> dict[str, object]:
        return {
            "event_log": self.event_log,
            "instance_pubkey": self.instance_pubkey.hex(),
            "possession": self.possession.hex(),
        }

    def encode(self) -> str:
        """The additional_evidence string: the RFC 8785 canonical JSON text of to_json()."""
        return jcs(self.to_json()).decode("utf-8")

    @classmethod
    def decode(cls, text: str) -> IdentityEvidence:
        """Parse an additional_evidence string; it must be exactly the canonical encoding."""
        if not isinstance(text, str):
            raise MessageError("additional_evidence is not a string")
        expect_str(text, what="additional_evidence", max_len=MAX_ADDITIONAL_EVIDENCE_CHARS)
        obj = loads_object(
            text, what="additional_evidence", max_bytes=MAX_ADDITIONAL_EVIDENCE_CHARS
        )
        m = expect_object(obj, what="additional_evidence", required=_MEMBERS)
        pub = m["instance_pubkey"]
        sig = m["possession"]
        if not isinstance(pub, str) or _HEX32.fullmatch(pub) is None:
            raise MessageError("instance_pubkey is not 64 lowercase hex digits")
        if not isinstance(sig, str) or _HEX64.fullmatch(sig) is None:
            raise MessageError("possession is not 128 lowercase hex digits")
        event_log = m["event_log"]
        if not isinstance(event_log, str):
            raise MessageError("event_log is not a string")
        evidence = cls(
            instance_pubkey=bytes.fromhex(pub), event_log=event_log, possession=bytes.fromhex(sig)
        )
        if evidence.encode() != text:
            raise MessageError("additional_evidence is not in canonical (RFC 8785) form")
        return evidence

    def verify_possession(self, nonce: str, tee_pubkey: TeePublicKey) -> None:
        """Check the instance key's signature over the session nonce and TEE key."""
        try:
            key = Ed25519PublicKey.from_public_bytes(self.instance_pubkey)
            key.verify(self.possession, possession_message(nonce, tee_pubkey))
        except (InvalidSignature, ValueError) as exc:
            raise MessageError("the instance key's proof of possession does not verify") from exc
