"""Fixtures for the workload building blocks, on the real podman, gocryptfs and /dev/fuse.

Nothing is skipped: a missing program fails the test with the command that installs it.
Every container, image and mount made here is removed at teardown, also after a failure.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tdx_identity.workload.runtime import PodmanRuntime
from tdx_identity.workload.store import GocryptfsStore
from tdx_identity.workload.store_key import LocalFileKeyProvider

SETUP_HINT = "install it with: sudo bash -c '. scripts/setup.d/20-workload.sh'"
IMAGE_CMD = '["/bin/httpd","-f","-p","8080","-h","/www"]'


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; {SETUP_HINT}", pytrace=False)
    return path


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=False, timeout=120, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="session")
def session_tag() -> str:
    """Distinguishes this run's containers and images from everything else on the host."""
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def busybox_static() -> Path:
    path = Path("/bin/busybox")
    if not path.is_file():
        pytest.fail(f"/bin/busybox (busybox-static) is missing; {SETUP_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def workload_image(
    session_tag: str, busybox_static: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A local busybox-static image whose CMD serves /www on 8080; built once per session."""
    podman = require_program("podman")
    applets = _run([str(busybox_static), "--list"]).stdout.decode().split()
    tar_path = tmp_path_factory.mktemp("image") / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for directory in ("bin", "www", "tmp", "etc", "root", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox_static, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    ref = f"localhost/tdx-identity-test-{session_tag}:1"
    with tar_path.open("rb") as tar_file:
        done = _run([podman, "import", "--change", f"CMD {IMAGE_CMD}", "-", ref], stdin=tar_file)
    if done.returncode != 0:
        pytest.fail(f"podman import failed: {done.stderr.decode(errors='replace')}")
    try:
        yield ref
    finally:
        _remove_labelled(podman, session_tag)
        _run([podman, "rmi", "--force", ref])


def _remove_labelled(podman: str, label_value: str) -> None:
    listed = _run(
        [
            podman,
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label=io.tdx-identity.workload={label_value}",
        ]
    )
    ids = listed.stdout.decode().split()
    if ids:
        _run([podman, "rm", "--force", "--time", "0", *ids])


@pytest.fixture
def runtime(session_tag: str, workload_image: str) -> Iterator[PodmanRuntime]:
    """A runtime labelling its containers with this session's tag; they are removed afterwards."""
    require_program("podman")
    try:
        yield PodmanRuntime(label_value=session_tag, publish_host="127.0.0.1", stop_timeout=1)
    finally:
        _remove_labelled("podman", session_tag)


def container_name() -> str:
    return f"tdxwl-{secrets.token_hex(5)}"


@dataclass
class StoreLayout:
    storage_path: Path
    cipher_dir: Path
    mount_point: Path
    key_path: Path

    def store(self, **kwargs: object) -> GocryptfsStore:
        return GocryptfsStore(
            storage_path=self.storage_path,
            cipher_dir=self.cipher_dir,
            mount_point=self.mount_point,
            key_provider=LocalFileKeyProvider(self.key_path),
            **kwargs,  # type: ignore[arg-type]
        )


def _lazy_unmount(mount_point: Path) -> None:
    with Path("/proc/self/mountinfo").open() as f:
        mounted = any(line.split(" ")[4] == str(mount_point) for line in f)
    if mounted:
        _run(["fusermount3", "-u", "-z", str(mount_point)])


@pytest.fixture
def store_layout(tmp_path: Path) -> Iterator[StoreLayout]:
    """STORAGE_PATH with the cipher dir and key inside, the clear mount point outside it."""
    require_program("gocryptfs")
    require_program("fusermount3")
    if not Path("/dev/fuse").exists():
        pytest.fail(f"/dev/fuse is missing; {SETUP_HINT}", pytrace=False)
    storage = tmp_path / "storage"
    storage.mkdir()
    layout = StoreLayout(
        storage_path=storage,
        cipher_dir=storage / "workload.crypt",
        mount_point=tmp_path / "run" / "clear",
        key_path=storage / "keys" / "store.key",
    )
    try:
        yield layout
    finally:
        _lazy_unmount(layout.mount_point)


@pytest.fixture
async def mounted_store(store_layout: StoreLayout) -> AsyncIterator[GocryptfsStore]:
    store = store_layout.store()
    await LocalFileKeyProvider(store_layout.key_path).create_key()
    await store.init()
    await store.mount()
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            await store.unmount()
