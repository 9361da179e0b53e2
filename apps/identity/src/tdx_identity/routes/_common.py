"""What every route needs: the service behind the app."""

from __future__ import annotations

from sanic import Request

from tdx_identity.core.service import IdentityService


def service_of(request: Request) -> IdentityService:
    """The IdentityService that `create_app` attached to the app."""
    service = request.app.ctx.service
    if not isinstance(service, IdentityService):
        raise RuntimeError("the app was not built by tdx_identity.create_app")
    return service
