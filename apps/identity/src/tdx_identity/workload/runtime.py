"""The container runtime interface, and its implementation driving the podman CLI.

The podman CLI is driven through `asyncio.create_subprocess_exec` (never a shell, every
positional argument after `--`, every value validated by `config`), reading `--format json`
where podman offers it. podman-py is not used: it cannot bridge an interactive `exec` and
targets the 5.x API, while Debian 12 ships podman 4.3.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from tdx_identity.exceptions import ContainerRuntimeError, ImageUnavailableError, ProgramTimeout

from ._proc import Completed, run_program
from .config import (
    Hardening,
    WorkloadConfig,
    validate_image_id,
    validate_image_reference,
    validate_port,
)

__all__ = [
    "CONFIG_LABEL",
    "MANAGED_LABEL",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerRuntimeError",
    "ImageUnavailableError",
    "PodmanRuntime",
]

MANAGED_LABEL: Final = "io.tdx-identity.workload"
CONFIG_LABEL: Final = "io.tdx-identity.config-sha256"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
_ENV_VALUE_RE: Final = re.compile(r"[\x20-\x7e]{0,256}", re.ASCII)


@dataclass(frozen=True)
class ContainerInfo:
    """What one `podman container inspect` says about a container, as far as we compare it."""

    running: bool
    image_id: str
    labels: Mapping[str, str]
    port_bindings: frozenset[tuple[str, str, str]]
    """(container port/proto, host IP, host port) of every published port."""
    binds: frozenset[tuple[str, str]]
    """(host source, container destination) of every bind mount."""


class ContainerRuntime(Protocol):
    """What the identity service needs from a container engine."""

    async def image_exists(self, ref: str) -> bool:
        """Whether `ref` is in local storage (never pulls)."""
        ...

    async def image_id(self, ref: str) -> str:
        """The local image id of `ref`, pulling it if absent; `ImageUnavailableError` if neither."""
        ...

    async def local_image_id(self, ref: str) -> str | None:
        """The image ID `ref` (a reference or an image ID) names in local storage now, None if
        none (never pulls)."""
        ...

    async def inspect(self, name: str) -> ContainerInfo | None:
        """Container `name` as the engine reports it; None if there is no such container."""
        ...

    async def matching_container(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> bool:
        """Whether container `name` runs exactly as `recreate` would create it now from image
        `image_id` (same arguments, same image)."""
        ...

    async def recreate(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        *,
        image_id: str | None = None,
    ) -> str:
        """Replace any container `name` by a fresh one run by image ID and return its id.
        `image_id` is the ID `config.image` was pinned to (None: resolve `config.image` now)."""
        ...

    async def remove(self, name: str) -> None:
        """Remove container `name` if it exists (stopping it first)."""
        ...

    async def is_running(self, name: str) -> bool:
        """Whether container `name` exists and runs."""
        ...

    def exec_argv(
        self,
        name: str,
        argv: Sequence[str],
        tty: bool,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The argv that runs `argv` inside container `name` with stdio attached."""
        ...


def validate_container_name(name: str) -> str:
    """Container names are ours, but checked anyway: they end up as podman arguments."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid container name {name!r}")
    return name


class PodmanRuntime:
    """`ContainerRuntime` over the podman CLI, with runc, fixed ulimits and hardening flags."""

    def __init__(
        self,
        *,
        hardening: Hardening | None = None,
        podman: str = "podman",
        oci_runtime: str = "runc",
        label_value: str = "1",
        publish_host: str | None = None,
        use_init: bool = True,
        stop_timeout: int = 10,
        command_timeout: float = 120.0,
        pull_timeout: float = 120.0,
    ) -> None:
        self._hardening = hardening if hardening is not None else Hardening()
        self._podman = podman
        self._oci_runtime = oci_runtime
        self._label_value = label_value
        self._publish_host = publish_host
        self._use_init = use_init
        self._stop_timeout = stop_timeout
        self._command_timeout = command_timeout
        self._pull_timeout = pull_timeout

    @property
    def label(self) -> str:
        """The `key=value` label put on every container this runtime creates."""
        return f"{MANAGED_LABEL}={self._label_value}"

    async def _podman_cmd(
        self, operation: str, args: Sequence[str], *, time_limit: float | None = None
    ) -> Completed:
        try:
            return await run_program(
                [self._podman, *args], time_limit=time_limit or self._command_timeout
            )
        except FileNotFoundError:
            raise ContainerRuntimeError(
                operation, f"{self._podman!r} is not installed (run the setup script)"
            ) from None
        except ProgramTimeout:
            raise ContainerRuntimeError(operation, "timed out") from None

    async def _inspect_image(self, ref: str) -> str | None:
        done = await self._podman_cmd(
            "image inspect", ["image", "inspect", "--format", "json", "--", ref]
        )
        if done.returncode != 0:
            return None
        data = _json(done, "image inspect")
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise ContainerRuntimeError("image inspect", "unexpected output")
        image_id = data[0].get("Id")
        if not isinstance(image_id, str):
            raise ContainerRuntimeError("image inspect", "no image id in output")
        return image_id

    async def image_exists(self, ref: str) -> bool:
        """Whether `ref` is in local storage (never pulls)."""
        validate_image_reference(ref)
        return await self._inspect_image(ref) is not None

    async def local_image_id(self, ref: str) -> str | None:
        try:
            validate_image_id(ref)
        except ValueError:
            validate_image_reference(ref)
        found = await self._inspect_image(ref)
        return validate_image_id(found) if found is not None else None

    async def image_id(self, ref: str) -> str:
        validate_image_reference(ref)
        found = await self._inspect_image(ref)
        if found is not None:
            return validate_image_id(found)
        try:
            pulled = await self._podman_cmd(
                "pull", ["pull", "--quiet", "--", ref], time_limit=self._pull_timeout
            )
        except ContainerRuntimeError as exc:
            raise ImageUnavailableError(
                "pull",
                f"image {ref!r} is not in local storage and pulling it failed: {exc.reason}",
            ) from None
        if pulled.returncode != 0:
            raise ImageUnavailableError(
                "pull",
                f"image {ref!r} is not in local storage and pulling it failed: "
                f"{pulled.error_summary}",
            )
        found = await self._inspect_image(ref)
        if found is None:
            raise ImageUnavailableError("pull", f"image {ref!r} still absent after pull")
        return validate_image_id(found)

    def run_argv(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> list[str]:
        """The `podman run` arguments `recreate` uses, before it adds `--replace` and the
        `CONFIG_LABEL` of their digest (exposed for review and tests). The container runs by
        `image_id`, never by `config.image`: a retag of the reference changes nothing."""
        validate_container_name(name)
        validate_image_id(image_id)
        args = [
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            self.label,
            "--runtime",
            self._oci_runtime,
            "--pull",
            "never",
            "--restart",
            "no",
            "--stop-timeout",
            str(self._stop_timeout),
            *self._hardening.podman_args(),
        ]
        if self._use_init:
            args.append("--init")
        for host_dir, container_dir in sorted(mounts.items(), key=lambda kv: kv[1]):
            host = str(host_dir)
            if not host_dir.is_absolute() or any(c in host for c in ",=\n\x00"):
                raise ValueError(f"host mount source {host!r} cannot be expressed to podman")
            args += ["--mount", f"type=bind,source={host},destination={container_dir}"]
        if publish_port is not None:
            validate_port(publish_port)
            host_part = f"{self._publish_host}:" if self._publish_host else ""
            args += ["--publish", f"{host_part}{publish_port}:{config.port}/tcp"]
        args += ["--", image_id]
        return args

    def config_digest(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> str:
        """SHA-256 over the `run_argv` and the image ID: the container's whole configuration,
        recorded as a label at creation so that a later start can tell it is unchanged."""
        argv = self.run_argv(name, config, mounts, publish_port, image_id)
        canonical = json.dumps({"argv": argv, "image_id": image_id}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    async def recreate(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        *,
        image_id: str | None = None,
    ) -> str:
        unmounted = set(config.persist_dirs) - set(mounts.values())
        if unmounted:
            raise ValueError(f"persisted dirs without a mount: {sorted(unmounted)}")
        if image_id is None:
            image_id = await self.image_id(config.image)
        argv = self.run_argv(name, config, mounts, publish_port, image_id)
        digest = self.config_digest(name, config, mounts, publish_port, image_id)
        # `--replace` removes a container of that name first (stopped within its stop timeout):
        # one podman invocation instead of `rm` then `run`.
        argv[1:1] = ["--replace", "--label", f"{CONFIG_LABEL}={digest}"]
        done = await self._podman_cmd(
            "run", argv, time_limit=self._command_timeout + self._stop_timeout
        )
        if done.returncode != 0:
            await self.remove(name)
            raise ContainerRuntimeError("run", done.error_summary)
        container_id = done.stdout.decode("ascii", "replace").strip().splitlines()
        if not container_id:
            raise ContainerRuntimeError("run", "no container id printed")
        return container_id[-1]

    async def matching_container(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> bool:
        """Besides the digest label, podman's own view of the security-relevant settings is
        compared (image, bind mounts, published ports): a label alone is only a claim."""
        validate_image_id(image_id)
        info = await self.inspect(name)
        if info is None or not info.running:
            return False
        wanted_ports: frozenset[tuple[str, str, str]] = frozenset()
        if publish_port is not None:
            wanted_ports = frozenset(
                {(f"{config.port}/tcp", self._publish_host or "", str(publish_port))}
            )
        return (
            info.labels.get(MANAGED_LABEL) == self._label_value
            and info.labels.get(CONFIG_LABEL)
            == self.config_digest(name, config, mounts, publish_port, image_id)
            and info.image_id == image_id
            and info.port_bindings == wanted_ports
            and info.binds == frozenset((str(host), dest) for host, dest in mounts.items())
        )

    async def remove(self, name: str) -> None:
        validate_container_name(name)
        done = await self._podman_cmd(
            "rm",
            ["rm", "--force", "--ignore", "--time", str(self._stop_timeout), "--", name],
            time_limit=self._command_timeout + self._stop_timeout,
        )
        if done.returncode != 0:
            raise ContainerRuntimeError("rm", done.error_summary)

    async def is_running(self, name: str) -> bool:
        info = await self.inspect(name)
        return info is not None and info.running

    async def inspect(self, name: str) -> ContainerInfo | None:
        """Container `name` as podman reports it; None if there is no such container."""
        validate_container_name(name)
        done = await self._podman_cmd(
            "container inspect", ["container", "inspect", "--format", "json", "--", name]
        )
        if done.returncode != 0:
            if await self._container_absent(name):
                return None
            raise ContainerRuntimeError("container inspect", done.error_summary)
        data = _json(done, "container inspect")
        try:
            entry = data[0]
            labels = entry["Config"].get("Labels") or {}
            bindings = entry["HostConfig"].get("PortBindings") or {}
            return ContainerInfo(
                running=bool(entry["State"]["Running"]),
                image_id=str(entry["Image"]),
                labels={str(k): str(v) for k, v in labels.items()},
                port_bindings=frozenset(
                    (str(port), str(b.get("HostIp") or ""), str(b.get("HostPort") or ""))
                    for port, bound in bindings.items()
                    for b in bound or []
                ),
                binds=frozenset(
                    (str(m["Source"]), str(m["Destination"]))
                    for m in entry.get("Mounts") or []
                    if m.get("Type") == "bind"
                ),
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ContainerRuntimeError("container inspect", "unexpected output") from None

    async def _container_absent(self, name: str) -> bool:
        done = await self._podman_cmd("container exists", ["container", "exists", "--", name])
        return done.returncode == 1

    async def managed_containers(self) -> list[str]:
        """Names of every container, running or not, that carries this runtime's label."""
        done = await self._podman_cmd(
            "ps", ["ps", "--all", "--format", "json", "--filter", f"label={self.label}"]
        )
        if done.returncode != 0:
            raise ContainerRuntimeError("ps", done.error_summary)
        data = _json(done, "ps")
        names: list[str] = []
        for entry in data if isinstance(data, list) else []:
            for n in entry.get("Names", []) if isinstance(entry, dict) else []:
                if isinstance(n, str):
                    names.append(n)
        return names

    def exec_argv(
        self,
        name: str,
        argv: Sequence[str],
        tty: bool,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        validate_container_name(name)
        if not argv:
            raise ValueError("exec needs a command")
        args = [self._podman, "exec", "--interactive"]
        if tty:
            args.append("--tty")
        for key, value in sorted((env or {}).items()):
            if not _ENV_NAME_RE.fullmatch(key) or not _ENV_VALUE_RE.fullmatch(value):
                raise ValueError(f"environment variable {key!r} not acceptable")
            args += ["--env", f"{key}={value}"]
        return [*args, "--", name, *argv]


def _json(done: Completed, operation: str) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise ContainerRuntimeError(operation, "output is not JSON") from None
