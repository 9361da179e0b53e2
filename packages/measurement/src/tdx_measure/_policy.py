"""What a verifier accepts in a replayed log: pinned helper programs, allowed images, and a
workload lifecycle that the identity service can actually produce."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tdx_measure._errors import InvalidPolicyError, PolicyViolationError
from tdx_measure._events import (
    DIGEST_SIZE,
    MAX_BUILD_ID_SIZE,
    ExecutableEvent,
    WorkloadEvent,
    validate_role,
)
from tdx_measure._rtmr import VerifiedLog


@dataclass(frozen=True)
class ExecutablePin:
    """The accepted builds of one role: an executable matches if its GNU build ID is in
    `build_ids` or its file SHA-384 is in `sha384s`."""

    build_ids: frozenset[bytes] = frozenset()
    sha384s: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        if not self.build_ids and not self.sha384s:
            raise InvalidPolicyError("a pin needs at least one build ID or SHA-384")
        if any(not 1 <= len(b) <= MAX_BUILD_ID_SIZE for b in self.build_ids):
            raise InvalidPolicyError(f"a build ID is 1..{MAX_BUILD_ID_SIZE} bytes")
        if any(len(h) != DIGEST_SIZE for h in self.sha384s):
            raise InvalidPolicyError(f"a SHA-384 is {DIGEST_SIZE} bytes")

    def matches(self, event: ExecutableEvent) -> bool:
        if event.build_id is not None and event.build_id in self.build_ids:
            return True
        return event.sha384 in self.sha384s


@dataclass(frozen=True)
class MeasurementPolicy:
    """`executables`: None accepts any program; a mapping accepts only the roles it names,
    each matching its pin, and requires every named role to appear in the log.
    `allowed_images` / `allowed_image_ids`: None accepts any; a set accepts only its members
    in every workload event."""

    executables: Mapping[str, ExecutablePin] | None = None
    allowed_images: frozenset[str] | None = None
    allowed_image_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.executables is not None:
            for role, pin in self.executables.items():
                validate_role(role)
                if not isinstance(pin, ExecutablePin):
                    raise InvalidPolicyError(f"the pin for {role!r} is not an ExecutablePin")
            frozen = MappingProxyType(dict(self.executables))
            object.__setattr__(self, "executables", frozen)


def _check_executable(event: ExecutableEvent, policy: MeasurementPolicy) -> None:
    if policy.executables is None:
        return
    pin = policy.executables.get(event.role)
    if pin is None:
        raise PolicyViolationError(event.role, event.path, "this role is not allowed by the policy")
    if not pin.matches(event):
        build_id = "none" if event.build_id is None else event.build_id.hex()
        raise PolicyViolationError(
            event.role,
            event.path,
            f"build ID {build_id} / SHA-384 {event.sha384.hex()} is not pinned for this role",
        )


def _check_workload(event: WorkloadEvent, policy: MeasurementPolicy) -> None:
    if policy.allowed_images is not None and event.image not in policy.allowed_images:
        raise PolicyViolationError("image", event.image, "is not an allowed image")
    if policy.allowed_image_ids is not None and event.image_id not in policy.allowed_image_ids:
        raise PolicyViolationError("image_id", event.image_id, "is not an allowed image ID")


def _same_configuration(configured: WorkloadEvent, exposed: WorkloadEvent) -> bool:
    return dataclasses.replace(configured, transition=exposed.transition) == exposed


def check_log(log: VerifiedLog, policy: MeasurementPolicy) -> None:
    """Raise `PolicyViolationError` naming the first event the policy refuses. It takes only the
    `VerifiedLog` that `verify_log` returns: a policy over a log nobody replayed against the
    quote's register proves nothing."""
    if not isinstance(log, VerifiedLog):
        raise TypeError(
            f"check_log takes the VerifiedLog that verify_log returns, not {type(log).__name__}"
        )
    seen_roles: set[str] = set()
    configured: WorkloadEvent | None = None
    exposed = False
    for event in log.events:
        if isinstance(event, ExecutableEvent):
            _check_executable(event, policy)
            seen_roles.add(event.role)
        elif isinstance(event, WorkloadEvent):
            _check_workload(event, policy)
            if event.transition == "configure":
                if exposed:
                    raise PolicyViolationError(
                        "workload", event.image, "configure after expose is not a valid lifecycle"
                    )
                configured = event
            else:
                if configured is None:
                    raise PolicyViolationError(
                        "workload", event.image, "expose without a preceding configure"
                    )
                if not _same_configuration(configured, event):
                    raise PolicyViolationError(
                        "workload", event.image, "expose differs from the configured workload"
                    )
                exposed = True
    if policy.executables is not None:
        missing = sorted(set(policy.executables) - seen_roles)
        if missing:
            raise PolicyViolationError(
                missing[0], "(not measured)", "a pinned role is missing from the log"
            )
