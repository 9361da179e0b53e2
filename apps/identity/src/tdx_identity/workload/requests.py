"""The owner's signed `/workload/configure` and `/workload/expose` bodies, checked before any
workload step: the signature over the exact raw bytes first, then each field with the one set
of validators in `config`."""

from __future__ import annotations

import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tdx_identity.exceptions import InvalidRequest, WorkloadAuthError, WorkloadConfigError

from .config import (
    WorkloadConfig,
    validate_image_reference,
    validate_persist_dirs,
    validate_port,
)

__all__ = ["parse_configure", "parse_expose", "verify_owner_signature"]


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
    except (ValueError, UnicodeDecodeError):
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


def _image(value: Any) -> str:
    try:
        return validate_image_reference(value)
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_configure(body: bytes, instance_pubkey: bytes) -> WorkloadConfig:
    """The `/workload/configure` body, checked field by field; raises InvalidRequest (400)
    or WorkloadAuthError (401, another instance)."""
    data = _body_object(body)
    _check_instance(data, instance_pubkey)
    for name in ("image", "persist_dirs", "port"):
        if name not in data:
            raise InvalidRequest(f"missing field: {name}")
    image = _image(data["image"])
    try:
        return WorkloadConfig(
            image=image,
            persist_dirs=validate_persist_dirs(data["persist_dirs"]),
            port=validate_port(data["port"]),
        )
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_expose(body: bytes, instance_pubkey: bytes) -> str:
    """The image named by a `/workload/expose` body."""
    data = _body_object(body)
    _check_instance(data, instance_pubkey)
    if "image" not in data:
        raise InvalidRequest("missing field: image")
    return _image(data["image"])
