"""The Sanic app factory: the one module that knows both the settings and the adapters.

It hands each component its own small settings value, builds the adapters (platform, registry
client, workload manager) behind the core's ports (`core.ports`), and wires the core (state,
instance key, RTMR3 measurement log, `IdentityService`) to the HTTP routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sanic import Sanic

from tdx_identity.core.comparison import Backoff
from tdx_identity.core.evidence import MeasuredEvidence
from tdx_identity.core.instance_key import load_or_create_instance_key, public_key_bytes
from tdx_identity.core.measurement import MeasurementLog
from tdx_identity.core.ports import (
    BootLogSource,
    KeyProvider,
    QuoteSource,
    RegistryClient,
    RtmrDevice,
    WorkloadManager,
    WorkloadSectionStore,
)
from tdx_identity.core.service import IdentityService
from tdx_identity.core.state import StateStore
from tdx_identity.exceptions import StartupError
from tdx_identity.files import ensure_private_dir
from tdx_identity.http_status import install_status_table
from tdx_identity.ops import install_identity_ops
from tdx_identity.platform import PlatformSettings, select_platform
from tdx_identity.registry_client import HttpRegistryClient
from tdx_identity.routes import instance_bp, registration_bp, workload_bp
from tdx_identity.settings import Settings, front_runtime_dir, measured_settings
from tdx_identity.workload.front import FrontRuntimeDir, FrontSettings, NginxFront, TlsKey
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_identity.workload.key_broker import KeyBrokerSettings
from tdx_identity.workload.manager import (
    Front,
    WorkloadSettings,
    discard_v1_host_key,
    missing_programs,
    podman_workload_manager,
    store_key_provider,
)
from tdx_identity.workload.ssh import HostKey
from tdx_identity.workload.unavailable import NotConfiguredWorkload
from tdx_kbs_protocol import EvidenceProvider
from tdx_measure import ConfigEvent
from tdx_service_kit import install_common

__all__ = [
    "APP_NAME",
    "WorkloadFactory",
    "create_app",
    "front_settings",
    "platform_settings",
    "podman_or_unavailable",
    "workload_settings",
]

APP_NAME = "tdx-identity"

WorkloadFactory = Callable[
    [WorkloadSettings, WorkloadSectionStore, HostKey, KeyProvider, Front], WorkloadManager
]
"""Builds the workload manager from its settings, the store of its state section, the SSH
host key its setup server presents, the source of its store key and the front that serves
the exposed workload."""


def platform_settings(settings: Settings) -> PlatformSettings:
    """The platform's part of the settings."""
    return PlatformSettings(
        configfs_tsm_path=settings.configfs_tsm_path,
        rtmr_sysfs_path=settings.rtmr_sysfs_path,
        mock_tdx_url=settings.mock_tdx_url,
        quote_timeout=settings.quote_timeout,
    )


def workload_settings(settings: Settings) -> WorkloadSettings:
    """The workload's part of the settings."""
    return WorkloadSettings(
        storage_path=settings.storage_path,
        clear_mount_dir=settings.clear_mount_dir,
        store_key_path=settings.store_key_path,
        container_name=settings.container_name,
        hardening=settings.hardening,
        ssh_listen=settings.ssh_listen,
        ssh_port=settings.ssh_port,
        workload_port=settings.workload_port,
        workload_publish_host=settings.workload_publish_host,
        workload_internal_port=settings.workload_internal_port,
        key_broker=(
            KeyBrokerSettings(settings.key_broker_url, timeout=settings.key_broker_timeout)
            if settings.key_broker_url
            else None
        ),
    )


def front_settings(settings: Settings) -> FrontSettings:
    """The front's part of the settings."""
    return FrontSettings(
        runtime_dir=front_runtime_dir(settings),
        listen_host=settings.workload_publish_host,
        plain_port=settings.workload_port if settings.plain_http else None,
        tls_port=settings.workload_tls_port,
        internal_port=settings.workload_internal_port,
        hostnames=settings.tls_hostnames,
    )


def podman_or_unavailable(
    settings: WorkloadSettings,
    section: WorkloadSectionStore,
    host_key: HostKey,
    keys: KeyProvider,
    front: Front,
) -> WorkloadManager:
    """The podman manager when podman, gocryptfs, fusermount3 and nginx are installed, else a
    manager whose every step answers 503 naming what is missing."""
    missing = missing_programs()
    if "nginx" not in installed_helpers({"nginx": HELPER_ROLES["nginx"]}):
        missing.append("nginx")
    if missing:
        return NotConfiguredWorkload(
            f"{NotConfiguredWorkload.REASON}: {', '.join(missing)} not found on PATH"
        )
    return podman_workload_manager(settings, section, host_key, keys, front)


def create_app(
    settings: Settings,
    *,
    quote_source: QuoteSource | None = None,
    registry: RegistryClient | None = None,
    workload: WorkloadManager | None = None,
    workload_factory: WorkloadFactory | None = None,
    rtmr_device: RtmrDevice | None = None,
    boot_log: BootLogSource | None = None,
    key_broker_transport: httpx.AsyncBaseTransport | None = None,
) -> Sanic[Any, Any]:
    """Build the identity app; raises StartupError (key, state, platform) before serving. The
    measurement log itself starts in the app's start listener.

    Real implementations are used for whatever is not injected: the platform `select_platform`
    picks (quote source, RTMR3 and CCEL boot log of the same TD; with both the quote source
    and the RTMR3 device injected, no boot log unless `boot_log` is), the HTTP registry
    client, and the workload manager `workload_factory` builds (default
    `podman_or_unavailable`) with the store key of `store_key_provider` (the key broker of the
    settings, reached through `key_broker_transport` when given, its envelope checked against
    the owner the registry confirmed, else the local key file).
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
    front_runtime = FrontRuntimeDir.open(
        front_runtime_dir(settings), storage_path=settings.storage_path
    )
    instance_key = load_or_create_instance_key(settings.storage_path)
    discard_v1_host_key(settings.storage_path)
    ssh_host_key = HostKey.generate()
    nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
    front = NginxFront(
        front_settings(settings),
        runtime=front_runtime,
        tls_key=TlsKey.generate(),
        instance_key=instance_key,
        nginx=nginx,
    )
    store = StateStore.open(settings.storage_path)
    if quote_source is None or rtmr_device is None:
        platform = select_platform(platform_settings(settings))
        if quote_source is None:
            quote_source = platform.quote_source
        if rtmr_device is None:
            rtmr_device = platform.rtmr_device
        if boot_log is None:
            boot_log = platform.boot_log
    if registry is None:
        registry = HttpRegistryClient(settings.registry_url, timeout=settings.registry_timeout)
    keys: KeyProvider | None = None
    if workload is None:
        evidence_quotes = quote_source

        def kbs_evidence() -> EvidenceProvider:
            # The log exists by the time the key broker is asked (after start-up began).
            return MeasuredEvidence(instance_key, evidence_quotes, measurement)

        def registered_owner() -> bytes | None:
            # Asked only once a step or recovery runs: after the service exists and the
            # comparison with the registry agreed (None before).
            return service.confirmed_owner

        factory = workload_factory or podman_or_unavailable
        own = workload_settings(settings)
        keys = store_key_provider(
            own,
            public_key_bytes(instance_key),
            kbs_evidence,
            registered_owner,
            transport=key_broker_transport,
        )
        workload = factory(own, store.section_store(), ssh_host_key, keys, front)
    measurement = MeasurementLog(
        settings.storage_path, rtmr_device, helpers=workload.helper_programs
    )

    service = IdentityService(
        instance_key=instance_key,
        store=store,
        quote_source=quote_source,
        registry=registry,
        workload=workload,
        measurement=measurement,
        ssh_host_key=ssh_host_key.openssh_public(),
        settings_event=ConfigEvent.of(measured_settings(settings)),
        registry_backoff=Backoff(settings.registry_retry_initial, settings.registry_retry_max),
        key_broker_backoff=Backoff(
            settings.key_broker_retry_initial, settings.key_broker_retry_max
        ),
        accept_unsequenced=settings.accept_unsequenced_requests,
        accept_v1_signatures=settings.accept_v1_signatures,
        tls=front,
        boot_log=boot_log,
    )

    app: Sanic[Any, Any] = Sanic(APP_NAME)
    app.ctx.service = service
    app.ctx.workload = workload
    app.ctx.ssh_host_key = ssh_host_key
    app.ctx.front = front
    install_common(app, limits=settings.limits, rate_limit=settings.rate_limit)
    install_status_table(app)
    app.blueprint(instance_bp)
    app.blueprint(registration_bp)
    app.blueprint(workload_bp)
    install_identity_ops(
        app,
        service=service,
        workload=workload,
        keys=keys,
        rtmr=rtmr_device,
        registry_url=settings.registry_url,
        key_broker_url=settings.key_broker_url,
        key_broker_transport=key_broker_transport,
    )

    async def _start(_app: Sanic[Any, Any]) -> None:
        try:
            await service.start()
        finally:
            # A start that did not start the front (nothing exposed, a refused or locked
            # workload, no agreement yet, a failure) stops the nginx a previous start left
            # serving: it would serve a certificate this start's event log no longer names.
            await front.stop_left_running()

    async def _stop(_app: Sanic[Any, Any]) -> None:
        await service.stop()
        # The workload manager left its serving front running for the next start to adopt;
        # whatever the manager, a front that does not serve is stopped and the TLS key, its
        # certificate and the front's config leave TD memory now (idempotent).
        await front.shutdown()

    app.register_listener(_start, "before_server_start")
    app.register_listener(_stop, "after_server_stop")
    return app


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
