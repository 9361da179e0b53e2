"""podman through PodmanRuntime: images, hardened containers, exec argv, and the full data path."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tdx_identity.exceptions import ContainerRuntimeError, ImageUnavailableError
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.runtime import PodmanRuntime
from tdx_identity.workload.store import GocryptfsStore
from tdx_service_kit.testing import free_port

from .conftest import StoreLayout, container_name


async def _podman(*args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "podman", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out


async def _get(url: str, patience: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + patience
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=2)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_local_image_is_found_without_pulling(
    runtime: PodmanRuntime, workload_image: str
) -> None:
    assert await runtime.image_exists(workload_image)
    image_id = await runtime.image_id(workload_image)
    assert len(image_id) == 64 and int(image_id, 16) >= 0


async def test_absent_image_that_cannot_be_pulled_is_a_clear_error(runtime: PodmanRuntime) -> None:
    ref = f"localhost/tdx-identity-absent-{secrets.token_hex(4)}:1"
    assert not await runtime.image_exists(ref)
    with pytest.raises(ImageUnavailableError, match="not in local storage and pulling it failed"):
        await runtime.image_id(ref)


async def test_invalid_reference_never_reaches_podman(runtime: PodmanRuntime) -> None:
    with pytest.raises(ValueError, match="Invalid image reference"):
        await runtime.image_id("--privileged")


IMAGE_ID = "ab" * 32


def test_run_argv_carries_runtime_ulimits_label_and_hardening() -> None:
    runtime = PodmanRuntime(label_value="t1", publish_host="127.0.0.1")
    config = WorkloadConfig(image="localhost/app:1", persist_dirs=("/data",), port=8080)
    argv = runtime.run_argv("wl", config, {Path("/run/clear/data-x"): "/data"}, 18080, IMAGE_ID)
    joined = " ".join(argv)
    assert "--runtime runc" in joined
    assert "--label io.tdx-identity.workload=t1" in joined
    assert "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" in joined
    assert "--security-opt no-new-privileges" in joined
    assert "--cap-drop all" in joined
    assert "--pull never" in joined
    assert "--mount type=bind,source=/run/clear/data-x,destination=/data" in joined
    assert "--publish 127.0.0.1:18080:8080/tcp" in joined
    unpublished = runtime.run_argv(
        "wl", config, {Path("/run/clear/data-x"): "/data"}, None, IMAGE_ID
    )
    assert "--publish" not in unpublished


def test_run_argv_runs_the_pinned_image_id_never_the_reference() -> None:
    runtime = PodmanRuntime(label_value="t1")
    config = WorkloadConfig(image="localhost/app:1", persist_dirs=(), port=8080)
    argv = runtime.run_argv("wl", config, {}, None, IMAGE_ID)
    assert argv[-2:] == ["--", IMAGE_ID]
    assert "localhost/app:1" not in argv
    for bad in ("localhost/app:1", "sha256:" + IMAGE_ID, "AB" * 32, "ab" * 31):
        with pytest.raises(ValueError, match="Invalid image ID"):
            runtime.run_argv("wl", config, {}, None, bad)


def test_run_argv_is_read_only_with_a_small_noexec_tmp_and_no_logs() -> None:
    argv = PodmanRuntime().run_argv(
        "wl",
        WorkloadConfig(image="localhost/app:1", persist_dirs=(), port=8080),
        {},
        None,
        IMAGE_ID,
    )
    joined = " ".join(argv)
    assert "--read-only --read-only-tmpfs=false" in joined
    tmpfs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert tmpfs == [f"/tmp:rw,size={64 * 1024 * 1024},mode=1777,noexec,nosuid,nodev"]
    assert "--log-driver none" in joined
    assert "--volume" not in argv and "-v" not in argv


def test_exec_argv_shapes() -> None:
    runtime = PodmanRuntime()
    assert runtime.exec_argv("wl", ["/bin/sh"], tty=False) == [
        "podman", "exec", "--interactive", "--", "wl", "/bin/sh",
    ]  # fmt: skip
    assert runtime.exec_argv("wl", ["/bin/sh", "-c", "id"], tty=True, env={"TERM": "xterm"}) == [
        "podman", "exec", "--interactive", "--tty", "--env", "TERM=xterm", "--", "wl",
        "/bin/sh", "-c", "id",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        runtime.exec_argv("--privileged", ["/bin/sh"], tty=False)
    with pytest.raises(ValueError):
        runtime.exec_argv("wl", ["/bin/sh"], tty=False, env={"TERM": "x\ny"})


async def test_container_runs_hardened(runtime: PodmanRuntime, workload_image: str) -> None:
    name = container_name()
    config = WorkloadConfig(image=workload_image, persist_dirs=(), port=8080)
    await runtime.recreate(name, config, {}, None)
    assert await runtime.is_running(name)
    assert name in await runtime.managed_containers()
    rc, status = await _podman("exec", name, "cat", "/proc/self/status")
    assert rc == 0, status
    fields = dict(line.split(":", 1) for line in status.decode().splitlines() if ":" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # filter mode: podman's default profile
    cap_eff = int(fields["CapEff"].strip(), 16)
    # CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, KILL 5, SETGID 6, SETUID 7, NET_BIND_SERVICE 10
    assert cap_eff == sum(1 << bit for bit in (0, 1, 3, 5, 6, 7, 10))
    rc, limits = await _podman(
        "exec",
        name,
        "sh",
        "-c",
        "ulimit -n; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    )
    assert rc == 0, limits
    assert limits.split() == [b"1024", b"512"]
    rc, out = await _podman("exec", name, "sh", "-c", "touch /written 2>&1; echo rc=$?")
    assert rc == 0 and out.endswith(b"Read-only file system\nrc=1\n"), out
    rc, out = await _podman("exec", name, "sh", "-c", "touch /tmp/w && grep ' /tmp ' /proc/mounts")
    assert rc == 0, out
    tmp_mount = out.split()
    assert tmp_mount[2] == b"tmpfs"
    assert {b"noexec", b"nosuid", b"nodev", b"size=65536k"} <= set(tmp_mount[3].split(b","))
    rc, out = await _podman("logs", name)
    assert rc != 0 and b"not logging output" in out
    rc, out = await _podman(
        "inspect",
        "--format",
        "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.OCIRuntime}}",
        name,
    )
    assert out.split() == [b"false", b"bridge", b"runc"]


async def test_recreate_replaces_and_remove_removes(
    runtime: PodmanRuntime, workload_image: str
) -> None:
    name = container_name()
    config = WorkloadConfig(image=workload_image, persist_dirs=(), port=8080)
    first = await runtime.recreate(name, config, {}, None)
    second = await runtime.recreate(name, config, {}, None)
    assert first != second
    assert await runtime.is_running(name)
    await runtime.remove(name)
    await runtime.remove(name)  # absent is fine
    assert not await runtime.is_running(name)


async def test_recreate_refuses_a_persist_dir_without_mount(
    runtime: PodmanRuntime, workload_image: str
) -> None:
    config = WorkloadConfig(image=workload_image, persist_dirs=("/www",), port=8080)
    with pytest.raises(ValueError, match="without a mount"):
        await runtime.recreate(container_name(), config, {}, None)


async def test_failed_run_reports_podman_error_and_leaves_no_container(
    runtime: PodmanRuntime, workload_image: str, tmp_path: Path
) -> None:
    name = container_name()
    config = WorkloadConfig(image=workload_image, persist_dirs=("/www",), port=8080)
    with pytest.raises(ContainerRuntimeError, match="podman run failed"):
        await runtime.recreate(name, config, {tmp_path / "does-not-exist": "/www"}, None)
    assert not await runtime.is_running(name)
    assert name not in await runtime.managed_containers()


async def test_served_file_comes_from_the_encrypted_store(
    runtime: PodmanRuntime,
    workload_image: str,
    mounted_store: GocryptfsStore,
    store_layout: StoreLayout,
) -> None:
    """Write through the clear mount, serve it over HTTP; no clear bytes land on disk."""
    config = WorkloadConfig(image=workload_image, persist_dirs=("/www",), port=8080)
    mounts = await mounted_store.prepare_dirs(config.persist_dirs)
    marker = b"served-through-gocryptfs-" + os.urandom(8).hex().encode()
    (mounted_store.path_for("/www") / "index.html").write_bytes(marker)

    name = container_name()
    port = free_port()
    started = time.monotonic()
    await runtime.recreate(name, config, mounts, port)
    response = await _get(f"http://127.0.0.1:{port}/index.html")
    start_to_serving = time.monotonic() - started
    assert response.status_code == 200
    assert response.content == marker
    assert start_to_serving < 20

    # Written inside the container, it lands in the store too, encrypted.
    rc, out = await _podman(
        "exec", name, "sh", "-c", f"echo {marker.decode()}-inside > /www/inside.txt"
    )
    assert rc == 0, out
    assert (mounted_store.path_for("/www") / "inside.txt").read_bytes() == marker + b"-inside\n"

    on_disk = b""
    for dirpath, _, filenames in os.walk(store_layout.storage_path):
        for filename in filenames:
            on_disk += (Path(dirpath) / filename).read_bytes() + filename.encode()
    assert marker not in on_disk
    assert b"index.html" not in on_disk

    await runtime.remove(name)
    await mounted_store.unmount()
    assert not mounted_store.is_mounted()


async def test_matching_container_names_the_image_only_for_the_same_configuration(
    runtime: PodmanRuntime, workload_image: str
) -> None:
    name = container_name()
    config = WorkloadConfig(image=workload_image, persist_dirs=(), port=8080)
    image_id = await runtime.image_id(workload_image)
    assert not await runtime.matching_container(name, config, {}, None, image_id)  # absent
    port = free_port()
    await runtime.recreate(name, config, {}, port, image_id=image_id)
    assert await runtime.matching_container(name, config, {}, port, image_id)
    assert not await runtime.matching_container(name, config, {}, port, "cd" * 32)
    assert not await runtime.matching_container(name, config, {}, None, image_id)
    assert not await runtime.matching_container(name, config, {}, free_port(), image_id)
    other = PodmanRuntime(label_value="someone-else", publish_host="127.0.0.1")
    assert not await other.matching_container(name, config, {}, port, image_id)
    await runtime.remove(name)
    assert not await runtime.matching_container(name, config, {}, port, image_id)
