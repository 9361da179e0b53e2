"""What every route needs: the service behind the app, and its workload manager."""

from __future__ import annotations

from typing import Protocol, cast

from sanic import Request

from tdx_identity.core.ports import WorkloadManager
from tdx_identity.core.service import IdentityService


def service_of(request: Request) -> IdentityService:
    """The IdentityService that `create_app` attached to the app."""
    service = request.app.ctx.service
    if not isinstance(service, IdentityService):
        raise RuntimeError("the app was not built by tdx_identity.create_app")
    return service


def workload_status(service: IdentityService, workload: WorkloadManager) -> tuple[str, str | None]:
    """Whether the workload is `refused` (at recovery), `locked` (the key broker has not
    released the store key), `running` or `stopped`, and why when refused or locked."""
    refusal = workload.refusal()
    if refusal is not None:
        return "refused", refusal
    locked = service.workload_locked
    if locked is not None:
        return "locked", locked
    if workload.running_image_id() is not None:
        return "running", None
    return "stopped", None


def workload_of(request: Request) -> WorkloadManager:
    """The WorkloadManager that `create_app` gave the service (read-only use: its status)."""
    service_of(request)
    return cast(WorkloadManager, request.app.ctx.workload)


class FrontStatus(Protocol):
    """What the state route reads of the attested front."""

    @property
    def state(self) -> str: ...

    @property
    def spki_sha256(self) -> bytes: ...


def front_of(request: Request) -> FrontStatus:
    """The attested front that `create_app` made (read-only use: its status)."""
    service_of(request)
    return cast(FrontStatus, request.app.ctx.front)
