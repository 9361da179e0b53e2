"""The real `PodmanWorkloadManager` with a front, over the in-memory runtime and store fakes of
`test_key_broker_manager` (no podman): nothing serves before expose; expose publishes the
container on 127.0.0.1 at the internal port and then starts the front, before the section
records the expose done; recovery of an exposed workload starts the front again (kept or
recreated container), a refused one does not; shutdown stops it; a front that cannot start
leaves the expose to be sent again. The podman argv publishes on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_key_broker_manager import CONFIG, IMAGE_ID, Keys, Runtime, Section, Store, null_ssh

from tdx_identity.core.ports import CommittedWorkload, WorkloadConfig, WorkloadPhase
from tdx_identity.core.state import WorkloadSection
from tdx_identity.exceptions import FrontError, WorkloadFailed
from tdx_identity.workload.config import Hardening
from tdx_identity.workload.manager import (
    LOOPBACK,
    PodmanWorkloadManager,
    WorkloadSettings,
    podman_workload_manager,
)
from tdx_identity.workload.runtime import PodmanRuntime
from tdx_identity.workload.ssh import HostKey

INTERNAL_PORT = 18080


@dataclass
class FakeFront:
    events: list[str]
    fail: bool = False
    serving: bool = False

    async def start(self) -> None:
        self.events.append("front.start")
        if self.fail:
            raise FrontError("nginx exited with status 1 at start")
        self.serving = True

    async def shutdown(self) -> None:
        self.events.append("front.shutdown")
        self.serving = False


@dataclass
class RecordingRuntime(Runtime):
    published: list[int | None] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    running: bool = False

    async def recreate(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        *,
        image_id: str | None = None,
    ) -> str:
        self.published.append(publish_port)
        self.events.append(f"recreate:{publish_port}")
        return await super().recreate(name, config, mounts, publish_port, image_id=image_id)

    async def matching_container(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> bool:
        return self.running and publish_port == INTERNAL_PORT


@dataclass
class FrontRig:
    events: list[str]
    runtime: RecordingRuntime
    store: Store
    section: Section
    front: FakeFront
    manager: PodmanWorkloadManager


@pytest.fixture
def rig() -> FrontRig:
    events: list[str] = []
    keys = Keys(withheld=False)
    runtime = RecordingRuntime(events=events)
    store = Store(keys)
    section = Section(WorkloadSection(WorkloadPhase.CONFIGURED, CONFIG, IMAGE_ID))
    front = FakeFront(events)
    manager = PodmanWorkloadManager(
        section=section,
        runtime=runtime,
        store=store,
        keys=keys,
        ssh_server_factory=null_ssh,
        container_name="w",
        workload_port=INTERNAL_PORT,
        key_at_registration=False,
        front=front,
    )
    return FrontRig(events, runtime, store, section, front, manager)


async def test_nothing_serves_before_expose(rig: FrontRig) -> None:
    rig.section.value = None
    await rig.manager.configure(CONFIG, bytes(32))
    await rig.manager.open_setup_access(CONFIG, bytes(32))
    assert rig.runtime.published == [None], "configure publishes nothing"
    assert not rig.front.serving and "front.start" not in rig.events
    assert await rig.manager.recover(CommittedWorkload(CONFIG, bytes(32), exposed=False)) is False
    assert not rig.front.serving


async def test_expose_publishes_the_internal_port_then_starts_the_front(rig: FrontRig) -> None:
    await rig.manager.begin_expose(CONFIG)
    await rig.manager.expose(CONFIG)
    assert rig.events == [f"recreate:{INTERNAL_PORT}", "front.start"]
    assert rig.front.serving
    section = rig.section.value
    assert section is not None and section.phase is WorkloadPhase.EXPOSED


async def test_a_front_that_cannot_start_leaves_the_expose_to_be_sent_again(
    rig: FrontRig,
) -> None:
    rig.front.fail = True
    await rig.manager.begin_expose(CONFIG)
    with pytest.raises(WorkloadFailed, match="the front cannot serve the workload: nginx exited"):
        await rig.manager.expose(CONFIG)
    section = rig.section.value
    assert section is not None and section.phase is WorkloadPhase.EXPOSING
    rig.front.fail = False
    await rig.manager.expose(CONFIG)
    assert rig.front.serving
    section = rig.section.value
    assert section is not None and section.phase is WorkloadPhase.EXPOSED


@pytest.mark.parametrize("kept", [False, True], ids=["recreated", "kept"])
async def test_recovery_of_an_exposed_workload_starts_the_front_again(
    rig: FrontRig, kept: bool
) -> None:
    config = WorkloadConfig(image=CONFIG.image, persist_dirs=(), port=CONFIG.port)
    rig.section.value = WorkloadSection(WorkloadPhase.EXPOSED, config, IMAGE_ID)
    rig.runtime.running = kept
    rig.store.initialized = rig.store.mounted = kept
    assert await rig.manager.recover(CommittedWorkload(config, bytes(32), exposed=True))
    assert rig.front.serving
    expected = ["front.start"] if kept else [f"recreate:{INTERNAL_PORT}", "front.start"]
    assert rig.events == expected


async def test_a_refused_workload_gets_no_front_at_recovery(rig: FrontRig) -> None:
    rig.section.value = WorkloadSection(WorkloadPhase.EXPOSED, CONFIG, IMAGE_ID)
    committed = CommittedWorkload(CONFIG, bytes(32), exposed=True, accepted_image_id="cd" * 32)
    assert await rig.manager.recover(committed)
    assert rig.manager.refusal() is not None
    assert "front.start" not in rig.events and not rig.front.serving


async def test_shutdown_stops_the_front(rig: FrontRig) -> None:
    await rig.manager.begin_expose(CONFIG)
    await rig.manager.expose(CONFIG)
    await rig.manager.shutdown()
    assert rig.events[-1] == "front.shutdown" and not rig.front.serving


def test_the_container_is_published_on_loopback_only() -> None:
    runtime = PodmanRuntime(hardening=Hardening(), label_value="w", publish_host=LOOPBACK)
    argv = runtime.run_argv("w", CONFIG, {}, INTERNAL_PORT, IMAGE_ID)
    published = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("--publish", "-p")]
    assert published == [f"127.0.0.1:{INTERNAL_PORT}:{CONFIG.port}/tcp"]
    assert not any(arg.startswith(("--publish=", "-p=", "--network=host")) for arg in argv)


def test_the_real_manager_publishes_at_the_internal_port_on_loopback(tmp_path: Path) -> None:
    settings = WorkloadSettings(
        storage_path=tmp_path / "storage",
        clear_mount_dir=tmp_path / "clear",
        store_key_path=tmp_path / "store.key",
        container_name="w",
        hardening=Hardening(),
        ssh_listen="127.0.0.1",
        ssh_port=2222,
        workload_port=8080,
        workload_publish_host="0.0.0.0",
        workload_internal_port=INTERNAL_PORT,
    )
    front = FakeFront([])
    manager = podman_workload_manager(
        settings, Section(), HostKey.generate(), Keys(withheld=False), front
    )
    runtime = manager._runtime
    assert isinstance(runtime, PodmanRuntime)
    argv = runtime.run_argv("w", CONFIG, {}, manager._workload_port, IMAGE_ID)
    assert argv[argv.index("--publish") + 1] == f"127.0.0.1:{INTERNAL_PORT}:{CONFIG.port}/tcp"
    assert manager._front is front
