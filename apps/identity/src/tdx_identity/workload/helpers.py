"""The helper programs the podman workload runs (podman, its OCI runtime and conmon, gocryptfs,
fusermount, and nginx for the attested front), found by role: what the RTMR3 log measures at
every start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from tdx_identity.exceptions import HelperMeasurementError
from tdx_measure import HelperNotFoundError, find_helper

__all__ = ["HELPER_ROLES", "HelperSpec", "installed_helpers", "resolve_helper", "resolve_helpers"]


@dataclass(frozen=True)
class HelperSpec:
    """How to find the program of one role: bare names looked up on the search path in order,
    then absolute fallback paths (for programs packaged outside PATH)."""

    names: tuple[str, ...]
    fallbacks: tuple[Path, ...] = ()


HELPER_ROLES: Final[Mapping[str, HelperSpec]] = MappingProxyType(
    {
        "podman": HelperSpec(("podman",)),
        "oci-runtime": HelperSpec(("runc",)),
        "conmon": HelperSpec(
            ("conmon",), (Path("/usr/libexec/podman/conmon"), Path("/usr/bin/conmon"))
        ),
        "gocryptfs": HelperSpec(("gocryptfs",)),
        "fusermount": HelperSpec(("fusermount3", "fusermount")),
        "nginx": HelperSpec(("nginx",), (Path("/usr/sbin/nginx"),)),
    }
)


def resolve_helper(role: str, spec: HelperSpec, *, search_path: str | None = None) -> Path:
    """The real path of the program for `role`: the first of `spec.names` on the search path
    (`None`: the process's PATH), else the first fallback that resolves to a regular file."""
    tried: list[str] = []
    for name in spec.names:
        try:
            return find_helper(name, search_path=search_path)
        except HelperNotFoundError as exc:
            tried.append(exc.reason)
    for fallback in spec.fallbacks:
        try:
            real = fallback.resolve(strict=True)
        except (OSError, RuntimeError):
            tried.append(f"{fallback} does not exist")
            continue
        if real.is_file():
            return real
        tried.append(f"{fallback} is not a regular file")
    raise HelperMeasurementError(role, "not found (" + "; ".join(tried) + ")")


def resolve_helpers(
    helpers: Mapping[str, HelperSpec] = HELPER_ROLES, *, search_path: str | None = None
) -> dict[str, Path]:
    """The real path of every role's program, in the mapping's order; raises
    HelperMeasurementError for the first one missing."""
    return {
        role: resolve_helper(role, spec, search_path=search_path) for role, spec in helpers.items()
    }


def installed_helpers(
    helpers: Mapping[str, HelperSpec] = HELPER_ROLES, *, search_path: str | None = None
) -> dict[str, Path]:
    """The roles whose program is installed here, with its path. What a manager that runs
    none of them itself measures: only programs that exist can run, so only those are."""
    found: dict[str, Path] = {}
    for role, spec in helpers.items():
        try:
            found[role] = resolve_helper(role, spec, search_path=search_path)
        except HelperMeasurementError:
            continue
    return found
