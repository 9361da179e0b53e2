"""Public facts about the instance: its key, its lifecycle state and its RTMR3 event log."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, text

from tdx_identity.routes._common import service_of

instance_bp = Blueprint("instance")


@instance_bp.get("/instance/pubkey")
async def instance_pubkey(request: Request) -> HTTPResponse:
    """The instance's ed25519 public key, hex."""
    return json({"pubkey": service_of(request).instance_pubkey.hex()})


@instance_bp.get("/instance/state")
async def instance_state(request: Request) -> HTTPResponse:
    """The lifecycle state name (an addition to API.md; carries no secret)."""
    return json({"state": service_of(request).state.lifecycle.value})


@instance_bp.get("/instance/eventlog")
async def instance_eventlog(request: Request) -> HTTPResponse:
    """The RTMR3 event log as far as it is extended into RTMR3 (tdx-measure's canonical JSON
    text; an addition to API.md)."""
    return text(service_of(request).event_log_json(), content_type="application/json")
