"""The real `PodmanWorkloadManager` with a key broker's store key, over in-memory fakes of the
container runtime and the encrypted store (no podman): a key the broker withholds is
`WorkloadLocked` before anything is touched, at configure and at recovery; the clear view still
mounted needs no key; owner registration asks the broker nothing; a host in the middle handing
over a key of its own (the real `KbsKeyProvider`) gets nothing made; recoveries are counted by
outcome (kept, restarted, refused) for the metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_fake import MitmKbs

from tdx_identity.core.ports import CommittedWorkload, KeyProvider, WorkloadConfig, WorkloadPhase
from tdx_identity.core.state import WorkloadSection
from tdx_identity.exceptions import StoreKeyUnavailable, WorkloadLocked
from tdx_identity.workload.key_broker import KbsKeyProvider, KeyBrokerSettings
from tdx_identity.workload.manager import RECOVERY_OUTCOMES, PodmanWorkloadManager
from tdx_identity.workload.runtime import ContainerInfo
from tdx_identity.workload.ssh import SetupSshServer
from tdx_kbs_protocol import TdxEvidence, TeePublicKey, seal_store_key

IMAGE = "localhost/app:1"
IMAGE_ID = "ab" * 32
CONFIG = WorkloadConfig(image=IMAGE, persist_dirs=("/data",), port=8000)


@dataclass
class Keys:
    """A key provider that withholds the key (as a refusing broker) until told otherwise."""

    withheld: bool = True
    asked: int = 0

    async def get_key(self) -> bytes:
        self.asked += 1
        if self.withheld:
            raise StoreKeyUnavailable("the key broker refused to release it (401 PolicyDeny)")
        return bytes(range(32))

    async def create_key(self) -> bytes:
        return await self.get_key()


@dataclass
class Runtime:
    calls: list[str] = field(default_factory=list)
    matches: bool = False
    resolves_to: str = IMAGE_ID

    async def image_exists(self, ref: str) -> bool:
        return True

    async def image_id(self, ref: str) -> str:
        return IMAGE_ID

    async def local_image_id(self, ref: str) -> str | None:
        return IMAGE_ID if ref == IMAGE_ID else self.resolves_to

    async def inspect(self, name: str) -> ContainerInfo | None:
        return None

    async def matching_container(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        image_id: str,
    ) -> bool:
        return self.matches

    async def recreate(
        self,
        name: str,
        config: WorkloadConfig,
        mounts: Mapping[Path, str],
        publish_port: int | None,
        *,
        image_id: str | None = None,
    ) -> str:
        self.calls.append("recreate")
        return "c1"

    async def remove(self, name: str) -> None:
        self.calls.append("remove")

    async def is_running(self, name: str) -> bool:
        return False

    def exec_argv(
        self, name: str, argv: Sequence[str], tty: bool, env: Mapping[str, str] | None = None
    ) -> list[str]:
        return list(argv)


@dataclass
class Store:
    """An encrypted store that, like gocryptfs, needs the key to init and mount."""

    keys: KeyProvider
    mounted: bool = False
    initialized: bool = False
    clear_root: Path = Path("/nonexistent-clear")

    async def init(self) -> None:
        if not self.initialized:
            await self.keys.get_key()
            self.initialized = True

    async def mount(self) -> None:
        if not self.mounted:
            await self.keys.get_key()
            self.mounted = True

    async def unmount(self) -> None:
        self.mounted = False

    def is_mounted(self) -> bool:
        return self.mounted

    def path_for(self, persist_dir: str) -> Path:
        return self.clear_root / persist_dir.lstrip("/")

    async def prepare_dirs(self, persist_dirs: Iterable[str]) -> dict[Path, str]:
        return {self.path_for(d): d for d in persist_dirs}


@dataclass
class Section:
    value: WorkloadSection | None = None
    saves: int = 0

    def load(self) -> WorkloadSection | None:
        return self.value

    def save(self, section: WorkloadSection | None) -> None:
        self.saves += 1
        self.value = section


class _NullSsh:
    """Stands in for the SSH setup server."""

    is_serving = True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def null_ssh(owner_pubkey: bytes) -> SetupSshServer:
    return cast(SetupSshServer, _NullSsh())


@dataclass
class Rig:
    keys: Keys
    runtime: Runtime
    store: Store
    section: Section
    manager: PodmanWorkloadManager


@pytest.fixture
def rig() -> Rig:
    keys = Keys()
    runtime, store = Runtime(), Store(keys)
    section = Section(WorkloadSection(WorkloadPhase.CONFIGURED, CONFIG, IMAGE_ID))
    manager = PodmanWorkloadManager(
        section=section,
        runtime=runtime,
        store=store,
        keys=keys,
        ssh_server_factory=null_ssh,
        container_name="w",
        workload_port=8080,
        key_at_registration=False,
    )
    return Rig(keys, runtime, store, section, manager)


@pytest.mark.parametrize("exposed", [False, True])
async def test_recovery_without_the_key_is_locked_before_anything_is_touched(
    rig: Rig, exposed: bool
) -> None:
    if exposed:
        rig.section.value = WorkloadSection(WorkloadPhase.EXPOSED, CONFIG, IMAGE_ID)
    committed = CommittedWorkload(CONFIG, bytes(32), exposed=exposed)
    with pytest.raises(WorkloadLocked, match="PolicyDeny"):
        await rig.manager.recover(committed)
    assert rig.runtime.calls == []
    assert rig.section.saves == 0
    assert rig.manager.running_image_id() is None
    assert not rig.manager.ssh_serving
    assert rig.manager.recovery_outcomes() == dict.fromkeys(RECOVERY_OUTCOMES, 0)


async def test_recovery_once_the_key_is_released_rebuilds_the_workload(rig: Rig) -> None:
    rig.keys.withheld = False
    assert await rig.manager.recover(CommittedWorkload(CONFIG, bytes(32), exposed=False)) is False
    assert rig.runtime.calls == ["recreate"]
    assert rig.manager.running_image_id() == IMAGE_ID
    assert rig.manager.recovery_outcomes() == {"kept": 0, "restarted": 1, "refused": 0}


async def test_a_running_container_kept_at_recovery_is_counted_kept(
    rig: Rig, tmp_path: Path
) -> None:
    rig.store.initialized = rig.store.mounted = True
    rig.store.clear_root = tmp_path
    (tmp_path / "data").mkdir()
    rig.runtime.matches = True
    await rig.manager.recover(CommittedWorkload(CONFIG, bytes(32), exposed=False))
    assert rig.runtime.calls == []
    assert rig.manager.recovery_outcomes() == {"kept": 1, "restarted": 0, "refused": 0}


async def test_a_recovery_refused_for_its_image_is_counted_refused(rig: Rig) -> None:
    rig.runtime.resolves_to = "cd" * 32  # the reference now names another image
    await rig.manager.recover(CommittedWorkload(CONFIG, bytes(32), exposed=False))
    assert rig.manager.refusal() is not None
    assert "recreate" not in rig.runtime.calls
    assert rig.manager.recovery_outcomes() == {"kept": 0, "restarted": 0, "refused": 1}


async def test_a_mounted_clear_view_needs_no_key_at_recovery(rig: Rig) -> None:
    rig.store.initialized = rig.store.mounted = True
    await rig.manager.recover(CommittedWorkload(CONFIG, bytes(32), exposed=False))
    assert rig.keys.asked == 0


async def test_configure_without_the_key_is_locked_and_changes_nothing(rig: Rig) -> None:
    rig.section.value = None
    with pytest.raises(WorkloadLocked, match="PolicyDeny"):
        await rig.manager.configure(CONFIG, bytes(32))
    assert rig.runtime.calls == []
    assert rig.section.saves == 0


async def test_owner_registration_asks_the_broker_nothing(rig: Rig) -> None:
    await rig.manager.on_owner_registered(bytes(32))
    assert rig.keys.asked == 0


class _AnyEvidence:
    """Evidence for a host in the middle, which checks none."""

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str:
        return ""

    async def quote(self, report_data: bytes) -> TdxEvidence:
        return TdxEvidence(quote=report_data, cc_eventlog=None)


INSTANCE = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
OWNER = Ed25519PrivateKey.generate().public_key().public_bytes_raw()


@pytest.mark.parametrize("signer", [None, "another key"])
@pytest.mark.parametrize("step", ["configure", "recover"])
async def test_a_host_in_the_middle_gets_no_store_initialised_mounted_or_container_run(
    signer: str | None, step: str
) -> None:
    key = bytes(range(32))
    payload = key if signer is None else seal_store_key(Ed25519PrivateKey.generate(), INSTANCE, key)
    mitm = MitmKbs(payload)
    keys = KbsKeyProvider(
        KeyBrokerSettings("http://kbs.test:3020"),
        INSTANCE,
        _AnyEvidence,
        lambda: OWNER,
        transport=mitm.transport(),
    )
    runtime, store = Runtime(), Store(keys)
    section = Section(
        None if step == "configure" else WorkloadSection(WorkloadPhase.CONFIGURED, CONFIG, IMAGE_ID)
    )
    manager = PodmanWorkloadManager(
        section=section,
        runtime=runtime,
        store=store,
        keys=keys,
        ssh_server_factory=null_ssh,
        container_name="w",
        workload_port=8080,
        key_at_registration=False,
    )
    with pytest.raises(WorkloadLocked, match="is not the owner's store key for this instance"):
        if step == "configure":
            await manager.configure(CONFIG, OWNER)
        else:
            await manager.recover(CommittedWorkload(CONFIG, OWNER, exposed=False))
    assert mitm.released == 1
    assert not store.initialized and not store.mounted
    assert runtime.calls == []
    assert section.saves == 0
    assert manager.running_image_id() is None
    assert not manager.ssh_serving
