"""The real `WorkloadManager`: podman container, gocryptfs store, owner-only SSH setup access.

Every step first records its intent in the state's `workload` section (a `WorkloadSection`,
whose schema `core.state` owns), then acts, then records that it is done, so that a crash
(kill -9) at any point leaves a section from which `recover` reaches the last committed step.
Nothing is opened before the registry accepted the step that records it, so each step is split
around the service's re-registration:

    configure:       "configuring" -> SSH closed, store mounted, dirs, container (unpublished)
      accepted:      open_setup_access: SSH open -> "configured"
      refused:       abandon_configure: the new container removed, the section put back
    begin_expose:    "exposing" -> SSH closed for good, the image to publish resolved
      accepted:      expose: container recreated, port published -> "exposed"
      refused:       nothing more: SSH stays closed for good, the port unpublished

A configure interrupted by a crash (or refused) is rolled back to the configuration the service
committed (`PersistedState.workload_config`). An expose is rolled forward only when the service
committed it (after the registry accepted it); one that began but was not committed leaves SSH
closed for good and the port unpublished, because once SSH setup access began to close it must
never open again. A clean shutdown closes SSH; the container keeps running, the gocryptfs
daemon keeps the clear view mounted, and a serving front (nginx, `front.NginxFront`) keeps
serving, for the next start to adopt with its new certificate. When the
section shows the committed step completed, the clear view is alive and podman runs the
container exactly as it would be created now (same arguments and image ID, recorded as a digest
label, and the same binds and published port as podman reports them), `recover` keeps that
container: a restart of this service does not interrupt a healthy workload. Anything else is
recreated.

The front. An exposed container is published on 127.0.0.1 at the internal port only; the front
(nginx) serves it on the workload ports, plain HTTP and TLS with the attested certificate of
this start. `expose` starts it once the container is published (before the section records the
expose done, so a front that cannot start leaves the expose to be sent again), and recovery of
an exposed workload starts it again (with this start's certificate: an nginx the previous
start left serving is adopted and reloaded with it); nothing else starts it, so before expose
nothing listens on the workload ports.

Images are pinned: configure resolves the owner's reference once to podman's image ID, records
it in the section, and every container runs by that ID (`--pull never`), so a retag after
configure changes nothing. At recovery, a recorded ID that is absent, a reference that now names
another image, or a container of another image refuses the workload (`image_pin`): no container
runs, the port stays unpublished, SSH stays closed, and `refusal()` says why.

The store key. The local key file (`LocalFileKeyProvider`) is made when the owner registers.
A key broker's key (`KbsKeyProvider`, `--key-broker-url`) is the owner's to upload (in an
envelope it signs for this instance, checked against the registered owner), so it is
first fetched at configure, before anything changes, and at recovery before anything needs the
store (unless the clear view is still mounted: its daemon holds the key). When the broker is
down or refuses, the step raises `WorkloadLocked` and nothing runs: the service keeps the
workload locked and asks again (`core.service`).

Whether a step may happen at all is the lifecycle's decision (`core.lifecycle`, which also reads
the section's phase); the manager only carries a step out.
"""

from __future__ import annotations

import logging
import shutil
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

import httpx

from tdx_identity.core.ports import (
    CommittedWorkload,
    KeyProvider,
    WorkloadConfig,
    WorkloadPhase,
    WorkloadSection,
    WorkloadSectionStore,
)
from tdx_identity.exceptions import (
    ContainerRuntimeError,
    FrontError,
    ImageUnavailableError,
    KeyExistsError,
    KeyNotFoundError,
    KeyProviderError,
    SshServerError,
    StartupError,
    StateWriteError,
    StoreError,
    StoreKeyUnavailable,
    WorkloadFailed,
    WorkloadLocked,
    WorkloadRejected,
)
from tdx_identity.files import fsync_dir

from .config import Hardening
from .helpers import HELPER_ROLES, resolve_helpers
from .image_pin import ImageEvidence, image_refusal
from .key_broker import EvidenceFactory, KbsKeyProvider, KeyBrokerSettings, OwnerSource
from .runtime import ContainerRuntime, PodmanRuntime
from .ssh import HostKey, SetupSshServer, container_exec_factory
from .store import EncryptedStore, GocryptfsStore
from .store_key import LocalFileKeyProvider

__all__ = [
    "CIPHER_DIR_NAME",
    "RECOVERY_OUTCOMES",
    "Front",
    "PodmanWorkloadManager",
    "SshServerFactory",
    "WorkloadSettings",
    "discard_v1_host_key",
    "missing_programs",
    "podman_workload_manager",
    "store_key_provider",
]

_log = logging.getLogger("tdx_identity.workload")

_T = TypeVar("_T")

RECOVERY_OUTCOMES: Final = ("kept", "restarted", "refused")
"""How a recovery of a committed workload ended: its running container kept, the container
started again (recreated from the pinned image), or refused (the pinned image no longer
stands: nothing runs)."""

SshServerFactory = Callable[[bytes], SetupSshServer]
"""Builds the SSH setup server for an owner's raw ed25519 public key (not yet started)."""


class Front(Protocol):
    """The front serving the exposed workload (`front.NginxFront`); FrontError on failure."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


class PodmanWorkloadManager:
    """`WorkloadManager` over a `ContainerRuntime`, an `EncryptedStore` and `SetupSshServer`.

    The service calls `configure`, `expose` and `recover` under its transition lock, so the
    section is never written by two steps at once.
    """

    def __init__(
        self,
        *,
        section: WorkloadSectionStore,
        runtime: ContainerRuntime,
        store: EncryptedStore,
        keys: KeyProvider,
        ssh_server_factory: SshServerFactory,
        container_name: str,
        workload_port: int,
        key_at_registration: bool = True,
        front: Front | None = None,
    ) -> None:
        """`workload_port` is the host port the container is published on when exposed (the
        front's internal port, on the runtime's publish host, 127.0.0.1); `front`, when given,
        serves it on the workload ports."""
        self._section = section
        self._key_at_registration = key_at_registration
        self._runtime = runtime
        self._store = store
        self._keys = keys
        self._ssh_factory = ssh_server_factory
        self._name = container_name
        self._workload_port = workload_port
        self._front = front
        self._ssh: SetupSshServer | None = None
        self._ssh_closed_for_good = False
        self._image_id: str | None = None
        self._refusal: str | None = None
        self._expose_image_id: str | None = None
        self._section_before: WorkloadSection | None = None
        self._recoveries = dict.fromkeys(RECOVERY_OUTCOMES, 0)

    # -- what tests and the app may observe ---------------------------------------------------

    @property
    def ssh_serving(self) -> bool:
        """Whether SSH setup access listens now."""
        return self._ssh is not None and self._ssh.is_serving

    def section(self) -> WorkloadSection | None:
        """The persisted section."""
        return self._section.load()

    def helper_programs(self) -> Mapping[str, Path]:
        """Every helper role this manager runs: a missing one stops the start."""
        return resolve_helpers(HELPER_ROLES)

    def running_image_id(self) -> str | None:
        """The pinned image ID the container was last started by (podman runs it by that ID),
        or, for a container kept at recovery, the pinned ID podman reports it runs."""
        return self._image_id

    def recovery_outcomes(self) -> dict[str, int]:
        """How many recoveries of a committed workload ended in each of `RECOVERY_OUTCOMES`
        (a copy): `restarted` counts the workload restarts."""
        return dict(self._recoveries)

    def refusal(self) -> str | None:
        """Why recovery refused to start the committed workload (its image is not the one
        pinned at configure); None when it did not, or once a configure started it again."""
        return self._refusal

    # -- the WorkloadManager steps -----------------------------------------------------------

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        """Create the store key now, so that it exists before any data does; retry-safe. A key
        broker's key is the owner's to upload: it is first fetched at configure."""
        if self._key_at_registration:
            await self._ensure_key()

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        """Check the image, close SSH setup access, then (re)build the container unpublished;
        SSH opens only in `open_setup_access`, once the registry accepted the step."""
        image_id = await self._require_image(config.image)
        await self._ensure_key()
        await self._close_ssh()
        self._section_before = self._section.load()
        await self._build(config, image_id)

    async def open_setup_access(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        """The registry accepted the configure: open SSH for the owner and record it done."""
        image_id = self._image_id
        if image_id is None:
            raise WorkloadFailed("no container runs the configuration to open setup access to")
        await self._open_ssh(owner_pubkey)
        self._save(WorkloadPhase.CONFIGURED, config, image_id)

    async def abandon_configure(self) -> None:
        """The registry refused the configure: remove the container it started (SSH stays
        closed), then put back the section as it was (until then it says "configuring", so a
        crash in between rolls back to the committed configuration at recovery)."""
        self._image_id = None
        await self._guard(self._runtime.remove(self._name), "remove the refused container")
        self._section.save(self._section_before)

    async def begin_expose(self, config: WorkloadConfig) -> str:
        """Close SSH for good; returns the image ID configure pinned (what the expose event
        records and `expose` publishes: the tag is not resolved again)."""
        current = self._section.load()
        if current is not None and current.config != config:
            raise WorkloadFailed("the configuration to expose is not the one the runtime runs")
        image_id = self._section_image_id(config)
        self._save(WorkloadPhase.EXPOSING, config, image_id)
        await self.close_setup_access_for_good()
        self._expose_image_id = image_id
        return image_id

    async def expose(self, config: WorkloadConfig) -> None:
        """The registry accepted the expose: recreate the container with its port published."""
        image_id = self._expose_image_id
        if image_id is None:
            raise WorkloadFailed("expose was not begun")
        await self._expose(config, image_id)

    async def close_setup_access_for_good(self) -> None:
        """Close SSH setup access and never open it again in this process."""
        self._ssh_closed_for_good = True
        await self._close_ssh()

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        """Bring podman, the store and SSH back to what the state and the section committed,
        unless the pinned image no longer stands (then nothing runs: see module)."""
        current = self._section.load()
        exposing = current is not None and current.phase in (
            WorkloadPhase.EXPOSING,
            WorkloadPhase.EXPOSED,
        )
        if committed is not None and committed.exposed:
            config = committed.config
            image_id = await self._pinned_image(current, config, committed.accepted_image_id)
            if image_id is None:
                self._ssh_closed_for_good = True
                self._recoveries["refused"] += 1
                return True
            self._ssh_closed_for_good = True
            await self._require_key_unless_mounted()
            if await self._keeps_running(
                current, WorkloadPhase.EXPOSED, config, self._workload_port, image_id
            ):
                self._ssh_closed_for_good = True
                await self._start_front()
                self._recoveries["kept"] += 1
                _log.info(
                    "workload recovered: exposed, the running container kept",
                    extra={"image": config.image, "image_id": image_id},
                )
                return True
            await self._expose(config, image_id)
            self._recoveries["restarted"] += 1
            _log.info(
                "workload recovered: exposed", extra={"image": config.image, "image_id": image_id}
            )
            return True
        if exposing:
            # An expose began (SSH closed for good) but the registry never accepted it: it is
            # neither undone nor finished; the owner may send it again.
            self._ssh_closed_for_good = True
            _log.warning(
                "an expose began but was not committed: SSH stays closed, the port unpublished"
            )
            return False
        if committed is not None:
            config = committed.config
            image_id = await self._pinned_image(current, config, committed.accepted_image_id)
            if image_id is None:
                self._recoveries["refused"] += 1
                return False
            await self._require_key_unless_mounted()
            if await self._keeps_running(current, WorkloadPhase.CONFIGURED, config, None, image_id):
                await self._open_ssh(committed.owner_pubkey)
                self._recoveries["kept"] += 1
                _log.info(
                    "workload recovered: configured, the running container kept, SSH open",
                    extra={"image": config.image, "image_id": image_id},
                )
                return False
            await self._apply(config, committed.owner_pubkey, image_id)
            self._recoveries["restarted"] += 1
            _log.info(
                "workload recovered: configured, SSH open",
                extra={"image": config.image, "image_id": image_id},
            )
            return False
        if current is not None:
            # A first configure crashed before the service committed it: nothing is configured.
            await self._guard(self._runtime.remove(self._name), "remove the unfinished container")
            self._section.save(None)
            _log.info("an unfinished first configure was rolled back")
        return False

    async def shutdown(self) -> None:
        """Stop SSH setup access; the container, the clear mount and a serving front keep
        running (see module)."""
        await self._close_ssh()
        if self._front is not None:
            await self._front.shutdown()

    # -- the steps themselves ----------------------------------------------------------------

    async def _pinned_image(
        self, section: WorkloadSection | None, config: WorkloadConfig, accepted: str | None
    ) -> str | None:
        """At recovery: the image ID `config.image` was pinned to, if it still stands; else
        record the refusal, remove any container of ours, and return None. The section's ID
        counts for `config` when it pins the same reference (an interrupted reconfigure with
        other dirs or port resolved it afresh from the owner's signed request)."""
        recorded = None
        if section is not None and section.config.image == config.image:
            recorded = section.image_id
        present = (
            recorded is not None
            and await self._guard(self._runtime.local_image_id(recorded), "inspect the image")
            == recorded
        )
        resolved = await self._guard(
            self._runtime.local_image_id(config.image), "resolve the image"
        )
        container = await self._guard(self._runtime.inspect(self._name), "inspect the container")
        evidence = ImageEvidence(
            recorded=recorded,
            recorded_present=present,
            resolved=resolved,
            container=container.image_id if container is not None else None,
            accepted=accepted,
        )
        reason = image_refusal(config.image, evidence)
        self._refusal = reason
        if reason is None:
            return recorded
        self._image_id = None
        _log.error(
            "workload refused at recovery: its image is not the one pinned at configure; "
            "no container runs and the port stays closed",
            extra={"image": config.image, "reason": reason},
        )
        await self._guard(self._runtime.remove(self._name), "remove the refused container")
        return None

    async def _keeps_running(
        self,
        section: WorkloadSection | None,
        completed: WorkloadPhase,
        config: WorkloadConfig,
        publish_port: int | None,
        image_id: str,
    ) -> bool:
        """At recovery: whether the running container can be kept as it is. Only after a step
        that completed (an interrupted one may have left a container or mount half-made), with
        the clear view alive (after its daemon died, a bind into it stays dead), and with podman
        running the container exactly as `recreate` would make it now from the pinned
        `image_id`. Read-only."""
        if section is None or section.phase is not completed or section.config != config:
            return False
        if not self._store.is_mounted():
            return False
        mounts = {self._store.path_for(d): d for d in config.persist_dirs}
        if not all(host_dir.is_dir() for host_dir in mounts):
            return False
        try:
            matches = await self._runtime.matching_container(
                self._name, config, mounts, publish_port, image_id
            )
        except ContainerRuntimeError as exc:
            _log.warning(
                "cannot inspect the running workload; recreating it", extra={"reason": str(exc)}
            )
            return False
        if not matches:
            _log.info("the running workload differs from the committed one; recreating it")
            return False
        self._image_id = image_id
        return True

    async def _apply(self, config: WorkloadConfig, owner_pubkey: bytes, image_id: str) -> None:
        """At recovery: rebuild the committed configuration by its pinned `image_id` and open
        SSH for its owner."""
        await self._build(config, image_id)
        await self._open_ssh(owner_pubkey)
        self._save(WorkloadPhase.CONFIGURED, config, image_id)

    async def _build(self, config: WorkloadConfig, image_id: str) -> None:
        """Run `config` by its pinned `image_id`, unpublished; SSH is left as it is."""
        self._save(WorkloadPhase.CONFIGURING, config, image_id)
        mounts = await self._mount_dirs(config)
        self._image_id = None
        await self._guard(
            self._runtime.recreate(self._name, config, mounts, None, image_id=image_id),
            "start the container",
        )
        self._image_id = image_id
        self._refusal = None

    async def _expose(self, config: WorkloadConfig, image_id: str) -> None:
        self._save(WorkloadPhase.EXPOSING, config, image_id)
        self._ssh_closed_for_good = True
        await self._close_ssh()
        mounts = await self._mount_dirs(config)
        self._image_id = None
        await self._guard(
            self._runtime.recreate(
                self._name, config, mounts, self._workload_port, image_id=image_id
            ),
            "start the published container",
        )
        self._image_id = image_id
        await self._start_front()
        self._save(WorkloadPhase.EXPOSED, config, image_id)

    async def _start_front(self) -> None:
        """Start the front serving the published container (a no-op while it serves)."""
        if self._front is None:
            return
        try:
            await self._front.start()
        except FrontError as exc:
            raise WorkloadFailed(f"the front cannot serve the workload: {exc}") from exc

    def _section_image_id(self, config: WorkloadConfig) -> str:
        """The image ID configure pinned `config` to; expose publishes exactly that image."""
        if self._refusal is not None:
            raise WorkloadFailed(f"the workload was refused at recovery: {self._refusal}")
        section = self._section.load()
        if section is None or section.config != config or section.image_id is None:
            raise WorkloadFailed("no image ID is pinned for the configuration to expose")
        return section.image_id

    async def _mount_dirs(self, config: WorkloadConfig) -> dict[Path, str]:
        try:
            await self._store.init()
            await self._store.mount()
            return await self._store.prepare_dirs(config.persist_dirs)
        except StoreKeyUnavailable as exc:
            raise WorkloadLocked(str(exc)) from None
        except (StoreError, KeyProviderError) as exc:
            raise WorkloadFailed(f"encrypted store: {exc}") from exc

    async def _open_ssh(self, owner_pubkey: bytes) -> None:
        if self._ssh_closed_for_good:
            raise WorkloadFailed("SSH setup access was closed for good by expose")
        if self._ssh is not None and self._ssh.is_serving:
            return
        server = self._ssh_factory(owner_pubkey)
        try:
            await server.start()
        except SshServerError as exc:
            raise WorkloadFailed(f"SSH setup access: {exc}") from exc
        self._ssh = server

    async def _close_ssh(self) -> None:
        server, self._ssh = self._ssh, None
        if server is not None:
            await server.close()

    async def _require_image(self, image: str) -> str:
        try:
            return await self._runtime.image_id(image)
        except ImageUnavailableError as exc:
            raise WorkloadRejected(exc.reason) from None
        except ContainerRuntimeError as exc:
            raise WorkloadFailed(str(exc)) from exc

    async def _ensure_key(self) -> None:
        try:
            await self._keys.get_key()
        except KeyNotFoundError:
            try:
                await self._keys.create_key()
            except KeyExistsError:
                await self._keys.get_key()
            except StoreKeyUnavailable as exc:
                raise WorkloadLocked(str(exc)) from None
            except KeyProviderError as exc:
                raise WorkloadFailed(f"store key: {exc}") from exc
        except StoreKeyUnavailable as exc:
            raise WorkloadLocked(str(exc)) from None
        except KeyProviderError as exc:
            raise WorkloadFailed(f"store key: {exc}") from exc

    async def _require_key_unless_mounted(self) -> None:
        """At recovery, before the store or a container is touched: the store key must be at
        hand (WorkloadLocked when the key broker does not release it), unless the clear view
        is still mounted (its daemon holds the key; nothing needs it)."""
        if self._store.is_mounted():
            return
        try:
            await self._keys.get_key()
        except StoreKeyUnavailable as exc:
            raise WorkloadLocked(str(exc)) from None
        except KeyProviderError as exc:
            raise WorkloadFailed(f"store key: {exc}") from exc

    async def _guard(self, step: Awaitable[_T], what: str) -> _T:
        try:
            return await step
        except ImageUnavailableError as exc:
            raise WorkloadFailed(f"cannot {what}: {exc.reason}") from exc
        except ContainerRuntimeError as exc:
            raise WorkloadFailed(f"cannot {what}: {exc}") from exc

    # -- the section -------------------------------------------------------------------------

    def _save(self, phase: WorkloadPhase, config: WorkloadConfig, image_id: str) -> None:
        try:
            self._section.save(WorkloadSection(phase, config, image_id))
        except StateWriteError as exc:
            raise WorkloadFailed(f"cannot persist the workload step: {exc}") from exc


# -- wiring from settings ----------------------------------------------------------------------

WORKLOAD_DIR_NAME: Final = "workload"
CIPHER_DIR_NAME: Final = "store.crypt"
V1_SSH_HOST_KEY_NAME: Final = "ssh_host_ed25519_key"
REQUIRED_PROGRAMS: Final = ("podman", "gocryptfs", "fusermount3")
LOOPBACK: Final = "127.0.0.1"
"""The only address an exposed container is published on: the front reaches it there."""


def discard_v1_host_key(storage_path: Path) -> bool:
    """Delete the SSH host key file v1 kept under STORAGE_PATH, a disk the host can read (so
    the host may hold a copy of it); True when there was one. The key is made in memory now."""
    path = storage_path / V1_SSH_HOST_KEY_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StartupError(
            f"cannot delete the v1 SSH host key {path}, which the host could read: "
            f"{exc.strerror or exc}"
        ) from exc
    fsync_dir(storage_path)
    _log.warning(
        "deleted the v1 SSH host key file: it lay on a disk the host can read, so the host may "
        "hold a copy; the SSH host key is now made in memory at every start and measured",
        extra={"path": str(path)},
    )
    return True


def missing_programs(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The programs the real manager needs that are not on PATH."""
    return [name for name in REQUIRED_PROGRAMS if which(name) is None]


@dataclass(frozen=True)
class WorkloadSettings:
    """Where the podman workload keeps its files and on which addresses it listens."""

    storage_path: Path
    clear_mount_dir: Path
    store_key_path: Path
    container_name: str
    hardening: Hardening
    ssh_listen: str
    ssh_port: int
    workload_port: int
    workload_publish_host: str
    key_broker: KeyBrokerSettings | None = None
    workload_internal_port: int = 18080
    """The container's host port when exposed, published on 127.0.0.1 only (the front's
    upstream); the front serves `workload_publish_host` at `workload_port` and the TLS port."""
    """The owner's key broker releasing the store key; None: the local key file."""


def store_key_provider(
    settings: WorkloadSettings,
    instance_pubkey: bytes,
    evidence: EvidenceFactory,
    owner: OwnerSource,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> KeyProvider:
    """The store key's source: the key broker of the settings (fetched against `evidence`,
    taken only in an envelope of `owner`'s for this instance, kept in memory only), else the
    local key file, announced by a loud warning: the host can read that file, and with it the
    store."""
    if settings.key_broker is not None:
        _log.info(
            "the store key comes from the owner's key broker, released against fresh evidence "
            "and kept in memory only",
            extra={"key_broker_url": _without_userinfo(settings.key_broker.url)},
        )
        if urllib.parse.urlsplit(settings.key_broker.url).scheme != "https":
            _log.warning(
                "the key broker is reached over plain http: whoever controls the network can "
                "answer in its place and withhold the store key (the workload stays locked; it "
                "cannot substitute one, the key must be in the owner's signed envelope); use an "
                "https URL",
                extra={"key_broker_url": _without_userinfo(settings.key_broker.url)},
            )
        if settings.store_key_path.exists():
            _log.warning(
                "a local store key file remains at %s although the key broker is used: the "
                "host can read it, and any store it opens. If the store was made with it, "
                "upload it (tdxctl kbs put-key --key-file), then delete the file",
                settings.store_key_path,
                extra={"store_key_path": str(settings.store_key_path)},
            )
        return KbsKeyProvider(
            settings.key_broker, instance_pubkey, evidence, owner, transport=transport
        )
    _log.warning(
        "UNPROTECTED STORE KEY: the store key is a local file; the host can read %s and "
        "decrypt the store. Use --key-broker-url to have the owner's key broker release it "
        "to this TD's evidence only",
        settings.store_key_path,
        extra={"store_key_path": str(settings.store_key_path)},
    )
    return LocalFileKeyProvider(settings.store_key_path)


def _without_userinfo(url: str) -> str:
    """`url` without a ``user:password@`` part (never logged)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def podman_workload_manager(
    settings: WorkloadSettings,
    section: WorkloadSectionStore,
    host_key: HostKey,
    keys: KeyProvider,
    front: Front | None = None,
) -> PodmanWorkloadManager:
    """The real manager laid out under the settings' paths and ports, with the store key from
    `keys` (`store_key_provider`); its SSH setup server presents `host_key` (in memory,
    measured by the service); `front` serves the exposed container."""
    workload_dir = settings.storage_path / WORKLOAD_DIR_NAME
    try:
        store = GocryptfsStore(
            storage_path=settings.storage_path,
            cipher_dir=workload_dir / CIPHER_DIR_NAME,
            mount_point=settings.clear_mount_dir,
            key_provider=keys,
        )
    except StoreError as exc:
        raise StartupError(str(exc)) from exc
    runtime = PodmanRuntime(
        hardening=settings.hardening,
        label_value=settings.container_name,
        publish_host=LOOPBACK,
    )
    exec_factory = container_exec_factory(runtime, settings.container_name)

    def ssh_server(owner_pubkey: bytes) -> SetupSshServer:
        return SetupSshServer(
            host=settings.ssh_listen,
            port=settings.ssh_port,
            host_key=host_key,
            owner_pubkey=owner_pubkey,
            exec_argv_factory=exec_factory,
        )

    return PodmanWorkloadManager(
        section=section,
        runtime=runtime,
        store=store,
        keys=keys,
        ssh_server_factory=ssh_server,
        container_name=settings.container_name,
        workload_port=settings.workload_internal_port,
        key_at_registration=not isinstance(keys, KbsKeyProvider),
        front=front,
    )
