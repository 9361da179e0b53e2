"""The seam between the identity service and a workload runtime, and the workload request bodies.

The service authenticates and validates `/workload/configure` and `/workload/expose`, asks the
lifecycle whether the step may happen, then calls a `WorkloadManager`. The manager runs the
container; it persists what it needs in the state's opaque `workload` section through the
`WorkloadSectionStore` it is given (see `WorkloadContext`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tdx_identity.exceptions import InvalidRequest

if TYPE_CHECKING:
    from tdx_identity.settings import Settings
    from tdx_identity.state import PersistedState

log = logging.getLogger("tdx_identity.workload")

MAX_PERSIST_DIRS = 32
MAX_PATH_CHARS = 1024
MAX_IMAGE_CHARS = 512
INVALID_DIRECTORY_PATH = "Invalid directory path"


class WorkloadError(Exception):
    """Base of the errors a WorkloadManager raises; the message is shown to the owner."""


class WorkloadRejected(WorkloadError):
    """The request cannot be carried out as asked, e.g. an image absent and not pullable (400)."""


class WorkloadUnavailable(WorkloadError):
    """No workload runtime can serve the request now (503)."""


class WorkloadFailed(WorkloadError):
    """The runtime failed while carrying out a valid request (500, logged)."""


class WorkloadAuthError(Exception):
    """The request is not the registered owner's for this instance (401)."""


@dataclass(frozen=True)
class WorkloadConfig:
    """A validated `/workload/configure` request, plus the owner key SSH setup access accepts."""

    image: str
    persist_dirs: tuple[str, ...]
    port: int
    owner_pubkey: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "persist_dirs": list(self.persist_dirs),
            "port": self.port,
            "owner_pubkey": self.owner_pubkey.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> WorkloadConfig:
        """Rebuild from `to_json` output; raises ValueError if it does not validate."""
        if not isinstance(data, dict):
            raise ValueError("workload config is not an object")
        owner_hex = data.get("owner_pubkey")
        if not isinstance(owner_hex, str):
            raise ValueError("workload config has no owner_pubkey")
        return cls(
            image=validate_image(data.get("image")),
            persist_dirs=validate_persist_dirs(data.get("persist_dirs")),
            port=validate_port(data.get("port")),
            owner_pubkey=bytes.fromhex(owner_hex),
        )


class WorkloadManager(Protocol):
    """A container runtime driven by the lifecycle; each call returns once the step is done."""

    async def configure(self, config: WorkloadConfig) -> None:
        """(Re)create the workload from `config`, unpublished, and open SSH setup access."""
        ...

    async def expose(self, image: str) -> None:
        """Close SSH setup access for good and publish the configured workload's port."""
        ...

    async def recover(self, state: PersistedState) -> None:
        """At start-up: bring the runtime back to the committed `state`."""
        ...

    async def shutdown(self) -> None:
        """At shutdown: close listeners and sessions; the workload's committed state is kept."""
        ...


class WorkloadSectionStore(Protocol):
    """Read and durably replace the state's opaque `workload` section.

    Only call it from inside `configure`, `expose` or `recover`: the service holds its
    transition lock then, so nothing else writes the state at the same time.
    """

    def load(self) -> dict[str, Any]: ...

    def save(self, section: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class WorkloadContext:
    """What `create_app` hands a workload factory to build the real manager."""

    settings: Settings
    section: WorkloadSectionStore


WorkloadFactory = Callable[[WorkloadContext], WorkloadManager]


class NotConfiguredWorkload:
    """The manager used when no workload runtime is wired in: every step answers 503."""

    REASON = "workload runtime not available"

    async def configure(self, config: WorkloadConfig) -> None:
        raise WorkloadUnavailable(self.REASON)

    async def expose(self, image: str) -> None:
        raise WorkloadUnavailable(self.REASON)

    async def recover(self, state: PersistedState) -> None:
        if state.workload_config is not None:
            log.warning("a workload is configured but no workload runtime is available to run it")

    async def shutdown(self) -> None:
        return None


# The distribution reference grammar of image names: [domain[:port]/]path[:tag][@digest]
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_RE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?",
    re.ASCII,
)


def validate_image(value: Any) -> str:
    """An image reference in the registry grammar; refuses options (`--privileged`), spaces,
    control characters and anything else a container CLI could misread."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("image must be a non-empty string")
    if len(value) > MAX_IMAGE_CHARS or not _IMAGE_RE.fullmatch(value):
        raise InvalidRequest("image is not a valid image reference")
    return value


def _clean_absolute(path: str) -> bool:
    if not path.startswith("/") or len(path) > MAX_PATH_CHARS:
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return False
    return all(segment not in ("", ".", "..") for segment in path[1:].split("/"))


def validate_persist_dirs(value: Any) -> tuple[str, ...]:
    """Clean absolute paths: leading `/`, no `.`/`..`/empty segment, no NUL or control char."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{INVALID_DIRECTORY_PATH}: persist_dirs must be a list of paths")
    if len(value) > MAX_PERSIST_DIRS:
        raise InvalidRequest(f"{INVALID_DIRECTORY_PATH}: at most {MAX_PERSIST_DIRS} persist_dirs")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not _clean_absolute(item):
            raise InvalidRequest(f"{INVALID_DIRECTORY_PATH}: {item!r}")
        if item in seen:
            raise InvalidRequest(f"{INVALID_DIRECTORY_PATH}: {item!r} is listed twice")
        seen.add(item)
    return tuple(value)


def validate_port(value: Any) -> int:
    """An integer 1..65535 (JSON booleans and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidRequest("port must be an integer from 1 to 65535")
    return value


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
    if given != instance_pubkey:
        raise WorkloadAuthError("instance_pubkey is not this instance's public key")


def parse_configure(body: bytes, instance_pubkey: bytes, owner_pubkey: bytes) -> WorkloadConfig:
    """The `/workload/configure` body, checked field by field; raises InvalidRequest (400)
    or WorkloadAuthError (401, another instance)."""
    data = _body_object(body)
    _check_instance(data, instance_pubkey)
    for name in ("image", "persist_dirs", "port"):
        if name not in data:
            raise InvalidRequest(f"missing field: {name}")
    return WorkloadConfig(
        image=validate_image(data["image"]),
        persist_dirs=validate_persist_dirs(data["persist_dirs"]),
        port=validate_port(data["port"]),
        owner_pubkey=owner_pubkey,
    )


def parse_expose(body: bytes, instance_pubkey: bytes) -> str:
    """The image named by a `/workload/expose` body."""
    data = _body_object(body)
    _check_instance(data, instance_pubkey)
    if "image" not in data:
        raise InvalidRequest("missing field: image")
    return validate_image(data["image"])
