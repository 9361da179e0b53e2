"""The owner's workload steps (API.md: POST /workload/configure, POST /workload/expose), and
the SSH setup server's host key (an unauthenticated convenience: the attested copy is the RTMR3
log's `ssh_host_key` event, which the registry's record shows).

The body is passed raw: the owner's `x-signature` covers its exact bytes, and is checked
before the body is parsed.
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_identity.routes._common import service_of
from tdx_identity.workload.ssh import HostKey

workload_bp = Blueprint("workload")


@workload_bp.post("/workload/configure")
async def configure(request: Request) -> HTTPResponse:
    """Run the configured container with SSH setup access open."""
    await service_of(request).configure_workload(request.body, request.headers.get("x-signature"))
    return json({"status": "success"})


@workload_bp.post("/workload/expose")
async def expose(request: Request) -> HTTPResponse:
    """Close SSH setup access for good and publish the workload port."""
    await service_of(request).expose_workload(request.body, request.headers.get("x-signature"))
    return json({"status": "success"})


@workload_bp.get("/workload/ssh-host-key")
async def ssh_host_key(request: Request) -> HTTPResponse:
    """The SSH setup server's public host key and its SHA256 fingerprint, unauthenticated: pin
    the registry record's attested `ssh_host_key` instead."""
    key = request.app.ctx.ssh_host_key
    if not isinstance(key, HostKey):
        raise RuntimeError("the app was not built by tdx_identity.create_app")
    return json({"public_key": key.openssh_public(), "fingerprint": key.fingerprint()})
