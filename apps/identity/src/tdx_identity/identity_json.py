"""API.md's IdentityInfo object (`pubkey`, `instance_signature`, `identity_signature` in
lowercase hex): what the registry's POST /register and the state file carry."""

from __future__ import annotations

from typing import Any

from tdx_report_data import IdentityInfo

__all__ = ["identity_from_json", "identity_to_json"]

_FIELDS = (("pubkey", 32), ("instance_signature", 64), ("identity_signature", 64))


def identity_to_json(identity: IdentityInfo | None) -> dict[str, str] | None:
    """The IdentityInfo object, or None."""
    if identity is None:
        return None
    return {
        "pubkey": identity.pubkey.hex(),
        "instance_signature": identity.instance_signature.hex(),
        "identity_signature": identity.identity_signature.hex(),
    }


def identity_from_json(value: Any, name: str) -> IdentityInfo:
    """Parse `identity_to_json` output; raises ValueError naming `name` and the bad field."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    fields: dict[str, bytes] = {}
    for key, size in _FIELDS:
        text = value.get(key)
        if not isinstance(text, str):
            raise ValueError(f"{name}.{key} is not {size} bytes of hex")
        raw = bytes.fromhex(text)
        if len(raw) != size:
            raise ValueError(f"{name}.{key} is not {size} bytes of hex")
        fields[key] = raw
    return IdentityInfo(**fields)
