"""The seam between the identity service and a workload runtime, and the workload request bodies.

The service authenticates and validates `/workload/configure` and `/workload/expose`, asks the
lifecycle whether the step may happen, then calls a `WorkloadManager`. The manager runs the
container; it persists what it needs in the state's opaque `workload` section through the
`WorkloadSectionStore` it is given (see `WorkloadContext`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tdx_identity.exceptions import InvalidRequest
from tdx_identity.workload.config import (
    WorkloadConfigError,
    validate_image_reference,
)
from tdx_identity.workload.config import validate_persist_dirs as _validate_persist_dirs
from tdx_identity.workload.config import validate_port as _validate_port

if TYPE_CHECKING:
    from tdx_identity.settings import Settings
    from tdx_identity.state import PersistedState

log = logging.getLogger("tdx_identity.workload")

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

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        """Prepare what the owner's workload will need (the store key); idempotent on retry."""
        ...

    async def configure(self, config: WorkloadConfig) -> None:
        """(Re)create the workload from `config`, unpublished, and open SSH setup access."""
        ...

    async def expose(self, image: str) -> None:
        """Close SSH setup access for good and publish the configured workload's port."""
        ...

    async def recover(self, state: PersistedState) -> bool:
        """At start-up: bring the runtime back to the committed `state`.

        Returns True when the workload is exposed, also when an expose interrupted by a crash
        was finished here: the service then commits EXPOSED, since exposing is never undone.
        """
        ...

    async def shutdown(self) -> None:
        """At shutdown: close listeners and sessions; the workload's committed state is kept."""
        ...

    def running_image_id(self) -> str | None:
        """podman's ID of the image the workload container was last started from by this
        process (configure, expose or recover), as the manager resolved it just before starting
        it; None when no container was started. What the RTMR3 workload events record."""
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
    """The manager used when no workload runtime can run here: every step answers 503.

    `reason` names what is missing (e.g. podman not installed); the store key is then created
    by the first configure once a runtime is available.
    """

    REASON = "workload runtime not available"

    def __init__(self, reason: str = REASON) -> None:
        self.reason = reason

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        return None

    async def configure(self, config: WorkloadConfig) -> None:
        raise WorkloadUnavailable(self.reason)

    async def expose(self, image: str) -> None:
        raise WorkloadUnavailable(self.reason)

    async def recover(self, state: PersistedState) -> bool:
        if state.workload_config is not None:
            log.warning(
                "a workload is configured but cannot run here", extra={"reason": self.reason}
            )
        return False

    async def shutdown(self) -> None:
        return None

    def running_image_id(self) -> str | None:
        return None


def validate_image(value: Any) -> str:
    """An image reference in the registry grammar (`workload.config`'s rule, the one the
    runtime applies too); refuses options (`--privileged`), spaces and control characters."""
    try:
        return validate_image_reference(value)
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


def validate_persist_dirs(value: Any) -> tuple[str, ...]:
    """A JSON list of clean absolute paths (`workload.config`'s rule); 400 `Invalid directory
    path` otherwise."""
    if not isinstance(value, list | tuple):
        raise InvalidRequest(f"{INVALID_DIRECTORY_PATH}: persist_dirs must be a list of paths")
    try:
        return _validate_persist_dirs(value)
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


def validate_port(value: Any) -> int:
    """An integer 1..65535 (JSON booleans and floats are refused)."""
    try:
        return _validate_port(value)
    except WorkloadConfigError as exc:
        raise InvalidRequest(str(exc)) from None


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
