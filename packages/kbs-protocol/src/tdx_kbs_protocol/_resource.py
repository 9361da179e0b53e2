"""Resource paths: ``<repository>/<type>/<tag>``, as in Trustee's resource URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from tdx_kbs_protocol._errors import ResourcePathError

_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

STORE_KEY_REPOSITORY: Final = "tdx-identity"
STORE_KEY_TYPE: Final = "store-key"


def _segment(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ResourcePathError(f"resource {what} is not a string")
    if _SEGMENT.fullmatch(text) is None:
        raise ResourcePathError(
            f"resource {what} must be 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    if ".." in text:
        raise ResourcePathError(f"resource {what} contains '..'")
    return text


@dataclass(frozen=True)
class ResourcePath:
    repository: str
    type: str
    tag: str

    def __post_init__(self) -> None:
        _segment(self.repository, "repository")
        _segment(self.type, "type")
        _segment(self.tag, "tag")

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        if not isinstance(text, str):
            raise ResourcePathError("resource path is not a string")
        parts = text.split("/")
        if len(parts) != 3:
            raise ResourcePathError("resource path must be <repository>/<type>/<tag>")
        return cls(repository=parts[0], type=parts[1], tag=parts[2])

    def __str__(self) -> str:
        return f"{self.repository}/{self.type}/{self.tag}"


def store_key_path(instance_pubkey: bytes) -> ResourcePath:
    """The resource holding an instance's store key: tdx-identity/store-key/<64 lowercase hex>."""
    if not isinstance(instance_pubkey, bytes) or len(instance_pubkey) != 32:
        raise ResourcePathError("an instance public key is 32 bytes")
    return ResourcePath(STORE_KEY_REPOSITORY, STORE_KEY_TYPE, instance_pubkey.hex())
