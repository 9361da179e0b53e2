"""The owner's admin steps on its key broker (`tdxctl kbs`): upload an instance's store key and
the resource policy, each with a fresh admin JWT (EdDSA, 60 s) signed by the owner's key.

The store key is the KBS resource `tdx-identity/store-key/<instance pubkey hex>`: the 32-byte key
in the owner's signed envelope for that instance (`tdx_kbs_protocol.seal_store_key`), signed by
the admin key, which is the owner's key. The identity service fetches it against fresh evidence
(`--key-broker-url`) and takes the key only when the envelope verifies with the registered
owner's public key and names its own instance. The key is never printed: a key made here exists
only in this process and at the broker.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_kbs_protocol import (
    KbsAnswerError,
    KbsClient,
    KbsProtocolError,
    KbsRefused,
    KbsUnavailable,
    ResourcePath,
    make_admin_token,
    seal_store_key,
    store_key_path,
)
from tdxctl._errors import BadAnswer, BrokerRefused, KeyFileError, RequestError, ServiceUnreachable
from tdxctl._keys import read_private_file

__all__ = [
    "ADMIN_TOKEN_LIFETIME",
    "MAX_POLICY_BYTES",
    "STORE_KEY_BYTES",
    "KbsAdmin",
    "load_policy",
    "load_store_key",
    "new_store_key",
]

ADMIN_TOKEN_LIFETIME: Final = 60
STORE_KEY_BYTES: Final = 32
MAX_POLICY_BYTES: Final = 256 * 1024
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")

_Step = Callable[[KbsClient], Awaitable[None]]


def new_store_key() -> bytes:
    """A fresh random 256-bit store key."""
    return secrets.token_bytes(STORE_KEY_BYTES)


def load_store_key(path: Path) -> bytes:
    """The store key in `path`: 32 raw bytes, or 64 hex digits (a trailing newline allowed).
    The file must be a regular file (not a link) that no one else may read or write, as key
    files are."""
    data = read_private_file(path, what="store key file")
    if len(data) == STORE_KEY_BYTES:
        return data
    text = data.rstrip(b"\r\n")
    if len(text) == 2 * STORE_KEY_BYTES and all(chr(c) in _HEX_DIGITS for c in text):
        return bytes.fromhex(text.decode("ascii"))
    raise KeyFileError(f"the store key file {path} holds neither 32 raw bytes nor 64 hex digits")


def load_policy(path: Path) -> str:
    """The Rego text of `path` (UTF-8, at most 256 KiB); the broker compiles it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise RequestError(f"cannot read the policy {path}: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise RequestError(f"the policy {path} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"the policy {path} is not UTF-8 text") from None


@dataclass(frozen=True)
class KbsAdmin:
    """The broker's admin routes, each call with a fresh admin token of `admin_key`."""

    url: str
    admin_key: Ed25519PrivateKey
    timeout: float = 15.0
    transport: httpx.AsyncBaseTransport | None = None

    def _token(self) -> str:
        return make_admin_token(self.admin_key, lifetime=ADMIN_TOKEN_LIFETIME)

    async def put_store_key(self, instance_pubkey: bytes, key: bytes) -> ResourcePath:
        """Upload `key` as the store key of `instance_pubkey`, in the envelope the admin (owner)
        key signs for that instance; its resource path."""
        if len(key) != STORE_KEY_BYTES:
            raise KeyFileError(f"a store key is {STORE_KEY_BYTES} bytes, not {len(key)}")
        path = store_key_path(instance_pubkey)
        envelope = seal_store_key(self.admin_key, instance_pubkey, key)
        await self._call(lambda client: client.put_resource(path, envelope, self._token()))
        return path

    async def set_policy(self, rego: str) -> None:
        """Replace the broker's resource policy with `rego`."""
        await self._call(lambda client: client.set_policy(rego, self._token()))

    async def _call(self, step: _Step) -> None:
        client = KbsClient(self.url, timeout=self.timeout, transport=self.transport)
        try:
            await step(client)
        except KbsRefused as exc:
            raise BrokerRefused(
                f"the key broker refused ({exc.status} {exc.variant}): {exc.detail}",
                status=exc.status,
                variant=exc.variant,
                detail=exc.detail,
            ) from None
        except KbsUnavailable as exc:
            raise ServiceUnreachable(
                f"the key broker at {self.url} is unavailable: {exc}"
            ) from None
        except KbsAnswerError as exc:
            raise BadAnswer(f"the key broker's answer is malformed: {exc}") from None
        except KbsProtocolError as exc:
            raise RequestError(f"the key broker request failed: {exc}") from None
        finally:
            await client.aclose()
