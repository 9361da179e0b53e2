"""What the owner asks to run (image, persisted dirs, port) and how hard the container is locked.

Every value is validated here and only here, before anything touches podman or the disk: a value
that reaches the runtime is known to be a plain image reference, clean absolute paths and a port.
`WorkloadConfig` is the one type for it, from the owner's request to the state file and podman.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from tdx_identity.exceptions import WorkloadConfigError

__all__ = [
    "DEFAULT_CAP_ADD",
    "MAX_PERSIST_DIRS",
    "Hardening",
    "WorkloadConfig",
    "WorkloadConfigError",
    "validate_image_id",
    "validate_image_reference",
    "validate_persist_dir",
    "validate_persist_dirs",
    "validate_port",
]


MAX_IMAGE_REFERENCE_LENGTH: Final = 512
MAX_IMAGE_NAME_LENGTH: Final = 255
MAX_PERSIST_DIRS: Final = 32
MAX_PATH_LENGTH: Final = 4096
MAX_SEGMENT_LENGTH: Final = 255

# Grammar of github.com/distribution/reference, restricted to ASCII and to sha256 digests.
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
_REFERENCE_RE: Final = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
_IMAGE_ID_RE: Final = re.compile(r"[0-9a-f]{64}", re.ASCII)

# Container paths whose contents the kernel or the runtime provides: a bind mount there would
# hide or replace what the container needs to run.
_RESERVED_CONTAINER_DIRS: Final = ("/proc", "/sys", "/dev")
# podman's --mount syntax separates options with ',' and '=' cannot be escaped; ':' separates
# the fields of -v. Refusing them keeps every mount unambiguous.
_MOUNT_SYNTAX_CHARS: Final = frozenset(",:=")


def _has_control_chars(value: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def validate_image_reference(image: object) -> str:
    """Return `image` if it is a plain `name[:tag][@sha256:hex]` reference, else raise."""
    if not isinstance(image, str):
        raise WorkloadConfigError("Invalid image reference: not a string")
    if not image:
        raise WorkloadConfigError("Invalid image reference: empty")
    if len(image) > MAX_IMAGE_REFERENCE_LENGTH:
        raise WorkloadConfigError(
            f"Invalid image reference: longer than {MAX_IMAGE_REFERENCE_LENGTH} characters"
        )
    if image.startswith("-"):
        raise WorkloadConfigError("Invalid image reference: must not start with '-'")
    if _has_control_chars(image):
        raise WorkloadConfigError("Invalid image reference: contains control characters")
    if any(ch.isspace() for ch in image):
        raise WorkloadConfigError("Invalid image reference: contains whitespace")
    match = _REFERENCE_RE.fullmatch(image)
    if match is None:
        raise WorkloadConfigError(
            "Invalid image reference: expected [registry/]name[:tag][@sha256:<64 hex>] "
            "with a lowercase name"
        )
    if len(match.group("name")) > MAX_IMAGE_NAME_LENGTH:
        raise WorkloadConfigError(
            f"Invalid image reference: name longer than {MAX_IMAGE_NAME_LENGTH} characters"
        )
    return image


def validate_image_id(image_id: object) -> str:
    """Return `image_id` if it is a podman image ID (64 lowercase hex, the SHA-256 of the
    image's config), else raise: the value a container is run by and recorded as."""
    if not isinstance(image_id, str) or not _IMAGE_ID_RE.fullmatch(image_id):
        raise WorkloadConfigError("Invalid image ID: expected 64 lowercase hex digits")
    return image_id


def validate_persist_dir(path: object) -> str:
    """Return `path` if it is a clean absolute container path, else raise `Invalid directory path`.

    Clean means: starts with '/', is not '/' itself, has no empty, '.' or '..' segment, no
    trailing '/', no NUL or control character, and none of ',', ':', '=' (podman mount syntax).
    """
    if not isinstance(path, str):
        raise WorkloadConfigError("Invalid directory path: not a string")
    shown = repr(path[:80])
    if not path.startswith("/"):
        raise WorkloadConfigError(f"Invalid directory path {shown}: must start with '/'")
    if path == "/":
        raise WorkloadConfigError(
            "Invalid directory path '/': the container root cannot be persisted"
        )
    if len(path) > MAX_PATH_LENGTH:
        raise WorkloadConfigError(
            f"Invalid directory path {shown}: longer than {MAX_PATH_LENGTH} characters"
        )
    if "\x00" in path:
        raise WorkloadConfigError(f"Invalid directory path {shown}: contains NUL")
    if _has_control_chars(path):
        raise WorkloadConfigError(f"Invalid directory path {shown}: contains control characters")
    if _MOUNT_SYNTAX_CHARS.intersection(path):
        raise WorkloadConfigError(
            f"Invalid directory path {shown}: ',', ':' and '=' are not allowed"
        )
    for segment in path[1:].split("/"):
        if segment == "":
            raise WorkloadConfigError(f"Invalid directory path {shown}: empty segment")
        if segment in (".", ".."):
            raise WorkloadConfigError(f"Invalid directory path {shown}: '{segment}' segment")
        if len(segment.encode()) > MAX_SEGMENT_LENGTH:
            raise WorkloadConfigError(
                f"Invalid directory path {shown}: a segment is longer than "
                f"{MAX_SEGMENT_LENGTH} bytes"
            )
    for reserved in _RESERVED_CONTAINER_DIRS:
        if path == reserved or path.startswith(reserved + "/"):
            raise WorkloadConfigError(
                f"Invalid directory path {shown}: {reserved} is provided by the runtime"
            )
    return path


def validate_persist_dirs(paths: object) -> tuple[str, ...]:
    """Validate a list of persisted dirs: each clean, no duplicates, at most MAX_PERSIST_DIRS."""
    if not isinstance(paths, list | tuple):
        raise WorkloadConfigError("Invalid directory path: persist_dirs must be a list of paths")
    result = tuple(validate_persist_dir(p) for p in paths)
    if len(result) > MAX_PERSIST_DIRS:
        raise WorkloadConfigError(
            f"Invalid directory path: at most {MAX_PERSIST_DIRS} persisted directories"
        )
    if len(set(result)) != len(result):
        raise WorkloadConfigError("Invalid directory path: a directory is listed twice")
    return result


def validate_port(port: object) -> int:
    """Return `port` if it is an integer in 1..65535 (booleans refused), else raise."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise WorkloadConfigError("Invalid port: must be an integer in 1..65535")
    if not 1 <= port <= 65535:
        raise WorkloadConfigError(f"Invalid port {port}: must be in 1..65535")
    return port


@dataclass(frozen=True)
class WorkloadConfig:
    """The owner's workload: image to run, container dirs kept encrypted, port it serves on."""

    image: str
    persist_dirs: tuple[str, ...]
    port: int

    def __post_init__(self) -> None:
        validate_image_reference(self.image)
        object.__setattr__(self, "persist_dirs", validate_persist_dirs(self.persist_dirs))
        validate_port(self.port)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "persist_dirs": list(self.persist_dirs), "port": self.port}

    @classmethod
    def from_json(cls, data: Any) -> WorkloadConfig:
        """Rebuild from `to_json` output; raises WorkloadConfigError (a ValueError) if invalid."""
        if not isinstance(data, dict):
            raise WorkloadConfigError("workload config is not an object")
        return cls(
            image=validate_image_reference(data.get("image")),
            persist_dirs=validate_persist_dirs(data.get("persist_dirs")),
            port=validate_port(data.get("port")),
        )


# Kept so that ordinary images (a web server dropping to its user, a package step chowning
# files) work. Dropped against podman's default: FSETID, SETFCAP, SETPCAP, SYS_CHROOT.
DEFAULT_CAP_ADD: Final = frozenset(
    {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"}
)
_CAP_RE: Final = re.compile(r"[A-Z][A-Z_]{1,30}", re.ASCII)
_MIN_MEMORY_BYTES: Final = 6 * 1024 * 1024  # podman refuses less
_MIN_TMP_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class Hardening:
    """Confinement of the workload container; the defaults are what the README promises.

    `seccomp_profile` None keeps podman's default profile; `seccomp_unconfined`, `privileged`,
    `host_network` and a writable root filesystem (`read_only_rootfs` False) exist to make
    weakening explicit, and all default to off. Container output is never logged
    (`--log-driver none`): podman's log files lie in clear on the TD's root disk.
    """

    no_new_privileges: bool = True
    cap_drop_all: bool = True
    cap_add: frozenset[str] = field(default=DEFAULT_CAP_ADD)
    pids_limit: int | None = 512
    memory_bytes: int | None = 1024 * 1024 * 1024
    seccomp_profile: str | None = None
    seccomp_unconfined: bool = False
    read_only_rootfs: bool = True
    tmp_size_bytes: int = 64 * 1024 * 1024
    privileged: bool = False
    host_network: bool = False
    nofile_limit: int = 1024
    nproc_limit: int = 1024

    def __post_init__(self) -> None:
        normalized = frozenset(c.upper().removeprefix("CAP_") for c in self.cap_add)
        for cap in normalized:
            if not _CAP_RE.fullmatch(cap):
                raise WorkloadConfigError(f"Invalid capability name {cap!r}")
        object.__setattr__(self, "cap_add", normalized)
        if self.pids_limit is not None and self.pids_limit < 1:
            raise WorkloadConfigError("pids_limit must be positive or None")
        if self.memory_bytes is not None and self.memory_bytes < _MIN_MEMORY_BYTES:
            raise WorkloadConfigError(f"memory_bytes must be at least {_MIN_MEMORY_BYTES}")
        if self.seccomp_profile is not None and not self.seccomp_profile.startswith("/"):
            raise WorkloadConfigError("seccomp_profile must be an absolute path")
        if self.seccomp_profile is not None and self.seccomp_unconfined:
            raise WorkloadConfigError("seccomp_profile and seccomp_unconfined are exclusive")
        if self.tmp_size_bytes < _MIN_TMP_BYTES:
            raise WorkloadConfigError(f"tmp_size_bytes must be at least {_MIN_TMP_BYTES}")
        for name, value in (("nofile_limit", self.nofile_limit), ("nproc_limit", self.nproc_limit)):
            if value < 1:
                raise WorkloadConfigError(f"{name} must be positive")

    def podman_args(self) -> list[str]:
        """The `podman run` flags that enforce these settings."""
        args: list[str] = []
        if self.privileged:
            args.append("--privileged")
        if self.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if self.seccomp_unconfined:
            args += ["--security-opt", "seccomp=unconfined"]
        elif self.seccomp_profile is not None:
            args += ["--security-opt", f"seccomp={self.seccomp_profile}"]
        if self.cap_drop_all:
            args += ["--cap-drop", "all"]
        for cap in sorted(self.cap_add):
            args += ["--cap-add", cap]
        if self.pids_limit is not None:
            args += ["--pids-limit", str(self.pids_limit)]
        if self.memory_bytes is not None:
            args += ["--memory", str(self.memory_bytes)]
        if self.read_only_rootfs:
            # Only /tmp is writable besides the persisted dirs: a size-limited tmpfs (memory,
            # never a disk), without podman's own unlimited tmpfs on /run, /tmp and /var/tmp.
            args += [
                "--read-only",
                "--read-only-tmpfs=false",
                "--tmpfs",
                f"/tmp:rw,size={self.tmp_size_bytes},mode=1777,noexec,nosuid,nodev",  # noqa: S108 (inside the container)
            ]
        args += ["--log-driver", "none"]
        if self.host_network:
            args += ["--network", "host"]
        args += [
            "--ulimit",
            f"nofile={self.nofile_limit}:{self.nofile_limit}",
            "--ulimit",
            f"nproc={self.nproc_limit}:{self.nproc_limit}",
        ]
        return args
