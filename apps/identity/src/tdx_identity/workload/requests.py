"""The owner's signed `/workload/configure` and `/workload/expose` bodies, checked before any
workload step: the signature over the exact raw bytes first, then each field with the one set
of validators in `config`.

Each body names its route (`"action"`) and carries the owner's `"seq"` (1..2^53-1), and has no
field its route does not define, so a body signed for one step can serve neither another step
nor, once its seq is spent, the same one again. A service run with
`--accept-unsequenced-requests` also takes a v1 body, without `action` and `seq`."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tdx_identity.exceptions import InvalidRequest, WorkloadAuthError, WorkloadConfigError

from .config import (
    WorkloadConfig,
    validate_image_reference,
    validate_persist_dirs,
    validate_port,
)

__all__ = [
    "MAX_SEQ",
    "ConfigureRequest",
    "ExposeRequest",
    "parse_configure",
    "parse_expose",
    "verify_owner_signature",
]

MAX_SEQ: Final = 2**53 - 1
_CONFIGURE_FIELDS: Final = frozenset(
    {"action", "seq", "instance_pubkey", "image", "persist_dirs", "port"}
)
_EXPOSE_FIELDS: Final = frozenset({"action", "seq", "instance_pubkey", "image"})


@dataclass(frozen=True)
class ConfigureRequest:
    """A checked configure body: the configuration, and its seq (None: an accepted v1 body)."""

    config: WorkloadConfig
    seq: int | None


@dataclass(frozen=True)
class ExposeRequest:
    """A checked expose body: the image it names, and its seq (None: an accepted v1 body)."""

    image: str
    seq: int | None


def verify_owner_signature(owner_pubkey: bytes, body: bytes, signature_hex: str | None) -> None:
    """Check `x-signature`: the owner's ed25519 signature over the exact raw body bytes."""
    if not signature_hex:
        raise WorkloadAuthError("missing x-signature header")
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WorkloadAuthError("x-signature is not hex") from None
    if len(signature) != 64:
        raise WorkloadAuthError("x-signature is not a 64-byte ed25519 signature")
    try:
        Ed25519PublicKey.from_public_bytes(owner_pubkey).verify(signature, body)
    except (InvalidSignature, ValueError):
        raise WorkloadAuthError("x-signature is not the owner's signature over the body") from None


def _body_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("body is not a JSON object")
    return parsed


def _check_instance(data: dict[str, Any], instance_pubkey: bytes) -> None:
    value = data.get("instance_pubkey")
    if not isinstance(value, str):
        raise InvalidRequest("instance_pubkey must be a hex string")
    try:
        given = bytes.fromhex(value)
    except ValueError:
        raise InvalidRequest("instance_pubkey is not hex") from None
    if not hmac.compare_digest(given, instance_pubkey):
        raise WorkloadAuthError("instance_pubkey is not this instance's public key")


def _check_envelope(
    data: dict[str, Any], action: str, fields: frozenset[str], *, accept_unsequenced: bool
) -> int | None:
    """The fields, `action` and `seq` every signed body shares; returns the seq (None only for
    an accepted unsequenced body). Raises InvalidRequest (400)."""
    unknown = sorted(str(name) for name in data if name not in fields)
    if unknown:
        raise InvalidRequest(f"unknown field(s) for {action}: {', '.join(unknown)}")
    if "action" in data:
        if data["action"] != action:
            raise InvalidRequest(f"action must be {action!r} on this route")
    elif not accept_unsequenced:
        raise InvalidRequest("missing field: action")
    if "seq" not in data:
        if not accept_unsequenced:
            raise InvalidRequest("missing field: seq")
        return None
    seq = data["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise InvalidRequest(f"seq must be an integer from 1 to {MAX_SEQ}")
    return seq


def _image(value: Any) -> str:
    try:
        return validate_image_reference(value)
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_configure(
    body: bytes, instance_pubkey: bytes, *, accept_unsequenced: bool = False
) -> ConfigureRequest:
    """The `/workload/configure` body, checked field by field; raises InvalidRequest (400)
    or WorkloadAuthError (401, another instance)."""
    data = _body_object(body)
    seq = _check_envelope(
        data, "configure", _CONFIGURE_FIELDS, accept_unsequenced=accept_unsequenced
    )
    _check_instance(data, instance_pubkey)
    for name in ("image", "persist_dirs", "port"):
        if name not in data:
            raise InvalidRequest(f"missing field: {name}")
    image = _image(data["image"])
    try:
        config = WorkloadConfig(
            image=image,
            persist_dirs=validate_persist_dirs(data["persist_dirs"]),
            port=validate_port(data["port"]),
        )
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None
    return ConfigureRequest(config=config, seq=seq)


def parse_expose(
    body: bytes, instance_pubkey: bytes, *, accept_unsequenced: bool = False
) -> ExposeRequest:
    """The `/workload/expose` body: the image it names and its seq."""
    data = _body_object(body)
    seq = _check_envelope(data, "expose", _EXPOSE_FIELDS, accept_unsequenced=accept_unsequenced)
    _check_instance(data, instance_pubkey)
    if "image" not in data:
        raise InvalidRequest("missing field: image")
    return ExposeRequest(image=_image(data["image"]), seq=seq)
