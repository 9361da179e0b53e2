"""The owner's workload steps (API.md: POST /workload/configure, POST /workload/expose).

The body is passed raw: the owner's `x-signature` covers its exact bytes, and is checked
before the body is parsed.
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_identity.routes._common import service_of

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
