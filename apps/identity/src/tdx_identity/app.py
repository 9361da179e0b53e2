"""The Sanic app factory: wires settings, key, state, quote source, RTMR3 measurement log,
registry and workload."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sanic import Sanic

from tdx_identity._fs import ensure_private_dir
from tdx_identity.errors import install_error_mapping
from tdx_identity.exceptions import StartupError
from tdx_identity.keys import load_or_create_instance_key
from tdx_identity.measurement import (
    HELPER_ROLES,
    HelperMeasurementError,
    HelperSpec,
    MeasurementLog,
    RtmrDevice,
    resolve_helper,
    select_rtmr_device,
)
from tdx_identity.quotes import QuoteSource, select_quote_source
from tdx_identity.registry_client import HttpRegistryClient, RegistryClient
from tdx_identity.routes import instance_bp, registration_bp, workload_bp
from tdx_identity.service import IdentityService
from tdx_identity.settings import Settings
from tdx_identity.state import StateStore
from tdx_identity.workload.manager import (
    PodmanWorkloadManager,
    missing_programs,
    podman_workload_manager,
    ssh_host_key_path,
)
from tdx_identity.workload.ssh import HostKey, SshServerError
from tdx_identity.workload_api import (
    NotConfiguredWorkload,
    WorkloadContext,
    WorkloadFactory,
    WorkloadManager,
)
from tdx_service_kit import install_common

APP_NAME = "tdx-identity"


def create_app(
    settings: Settings,
    *,
    quote_source: QuoteSource | None = None,
    registry: RegistryClient | None = None,
    workload: WorkloadManager | None = None,
    workload_factory: WorkloadFactory | None = None,
    rtmr_device: RtmrDevice | None = None,
) -> Sanic[Any, Any]:
    """Build the identity app; raises StartupError (key, state, quote source, RTMR3 device)
    before serving. The measurement log itself starts in the app's start listener.

    Real implementations are used for whatever is not injected. `workload_factory` builds the
    manager from a WorkloadContext (settings and the state's workload section); without it and
    without `workload`, the podman manager is used when podman, gocryptfs and fusermount3 are
    on PATH, else workload routes answer 503 naming what is missing (`NotConfiguredWorkload`).
    RTMR3 is the kernel's file at `settings.rtmr_sysfs_path`, else the simulator at the mock
    TDX URL (`select_rtmr_device`), unless `rtmr_device` is given.
    """
    if workload is not None and workload_factory is not None:
        raise ValueError("pass either workload or workload_factory, not both")
    try:
        ensure_private_dir(settings.storage_path)
    except OSError as exc:
        raise StartupError(
            f"cannot create storage path {settings.storage_path}: {exc.strerror}"
        ) from exc
    _check_clear_mount_dir(settings)
    instance_key = load_or_create_instance_key(settings.storage_path)
    ssh_host_key = _load_ssh_host_key(settings)
    store = StateStore.open(settings.storage_path)
    if quote_source is None:
        quote_source = select_quote_source(settings)
    if registry is None:
        registry = HttpRegistryClient(settings.registry_url, timeout=settings.registry_timeout)
    if workload is None:
        if workload_factory is None:
            missing = missing_programs()
            if missing:
                workload_factory = _unavailable(
                    f"{NotConfiguredWorkload.REASON}: {', '.join(missing)} not found on PATH"
                )
            else:
                workload_factory = podman_workload_manager
        workload = workload_factory(WorkloadContext(settings, store.section_store()))

    if rtmr_device is None:
        rtmr_device = select_rtmr_device(settings.rtmr_sysfs_path, settings.mock_tdx_url)
    measurement = MeasurementLog(
        settings.storage_path,
        rtmr_device,
        helpers=HELPER_ROLES
        if isinstance(workload, PodmanWorkloadManager)
        else installed_helpers(HELPER_ROLES),
    )

    service = IdentityService(
        instance_key=instance_key,
        store=store,
        quote_source=quote_source,
        registry=registry,
        workload=workload,
        measurement=measurement,
    )

    app: Sanic[Any, Any] = Sanic(APP_NAME)
    # The workload spawns podman, gocryptfs and SSH session programs. uvloop (0.23) passes
    # every inheritable descriptor to children (the HTTP listening socket ended up held by the
    # gocryptfs daemon) and gives them socketpair stdio that podman's conmon keeps open, so a
    # `podman run` never reached EOF. The standard loop closes them (close_fds) and uses pipes.
    app.config.USE_UVLOOP = False
    app.ctx.service = service
    app.ctx.settings = settings
    app.ctx.ssh_host_key = ssh_host_key
    install_common(app, limits=settings.limits, rate_limit=settings.rate_limit)
    install_error_mapping(app)
    app.blueprint(instance_bp)
    app.blueprint(registration_bp)
    app.blueprint(workload_bp)

    async def _start(_app: Sanic[Any, Any]) -> None:
        await service.start()

    async def _stop(_app: Sanic[Any, Any]) -> None:
        await service.stop()

    app.register_listener(_start, "before_server_start")
    app.register_listener(_stop, "after_server_stop")
    return app


def installed_helpers(
    helpers: Mapping[str, HelperSpec], *, search_path: str | None = None
) -> dict[str, HelperSpec]:
    """The helper roles whose program is installed here. Used when the podman workload manager
    is not the one running: only programs that exist can run, so only those are measured. With
    the podman manager every role is measured and a missing one stops the start."""
    found: dict[str, HelperSpec] = {}
    for role, spec in helpers.items():
        try:
            resolve_helper(role, spec, search_path=search_path)
        except HelperMeasurementError:
            continue
        found[role] = spec
    return found


def _check_clear_mount_dir(settings: Settings) -> None:
    """Neither the store's clear view nor its key may live under STORAGE_PATH."""
    storage = settings.storage_path.resolve()
    clear = settings.clear_mount_dir.resolve()
    if clear == storage or storage in clear.parents or clear in storage.parents:
        raise StartupError(
            f"clear mount dir {settings.clear_mount_dir} must be outside STORAGE_PATH "
            f"{settings.storage_path}: the encrypted store's clear view must not be written there"
        )
    key = settings.store_key_path.resolve()
    if key == storage or storage in key.parents:
        raise StartupError(
            f"store key path {settings.store_key_path} must be outside STORAGE_PATH "
            f"{settings.storage_path}: the key must not sit beside the ciphertext it opens"
        )


def _load_ssh_host_key(settings: Settings) -> HostKey:
    """The SSH setup server's host key, created once (0600) and served for pinning."""
    path = ssh_host_key_path(settings.storage_path)
    try:
        return HostKey.load_or_create(path)
    except SshServerError as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"cannot read or create SSH host key {path}: {exc.strerror}") from exc


def _unavailable(reason: str) -> WorkloadFactory:
    def factory(_context: WorkloadContext) -> WorkloadManager:
        return NotConfiguredWorkload(reason)

    return factory
