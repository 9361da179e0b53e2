"""POST /register: an identity service records an instance, its identities and its quote."""

from __future__ import annotations

import logging
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_service_kit import json_body

from ..registration import parse_registration
from ..services import services_of

log = logging.getLogger("tdx_registry.register")
SUCCESS_BODY = json({"status": "success"}).body or b""


def register_blueprint() -> Blueprint:
    """A fresh blueprint (one per app) with POST /register."""
    bp = Blueprint("registration")

    @bp.post("/register")
    async def register(request: Request[Any, Any]) -> HTTPResponse:
        registration = parse_registration(json_body(request))
        services = services_of(request)
        try:
            record = await services.registrar.register(registration)
        finally:
            services.read_cache.invalidate(registration.instance_pubkey)
        if record.binding_version == 1:
            log.warning(
                "V1: accepted a v1 registration (no registry challenge, replayable) "
                "(--accept-v1-registrations)",
                extra={"instance": record.instance_pubkey.hex()},
            )
        if services.any_measurement:
            log.warning(
                "UNPINNED: registration accepted without an MRTD/RTMR0-2 allow-list "
                "(--any-measurement)",
                extra={
                    "instance": record.instance_pubkey.hex(),
                    "mr_td": record.verdict.mr_td.hex(),
                },
            )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "instance registered",
                extra={
                    "instance": record.instance_pubkey.hex(),
                    "has_operator": record.operator is not None,
                    "has_owner": record.owner is not None,
                    "tcb_status": record.verdict.tcb_status,
                    "verification_skipped": record.verdict.skipped,
                    "binding_version": record.binding_version,
                },
            )
        return HTTPResponse(SUCCESS_BODY, content_type="application/json")

    return bp
