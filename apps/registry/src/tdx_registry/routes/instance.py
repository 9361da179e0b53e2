"""GET /instance/{pubkey}: the stored record of one instance, with its verdict."""

from __future__ import annotations

import base64
import re
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_report_data import IdentityInfo
from tdx_service_kit import BadRequest, NotFound

from ..records import InstanceRecord
from ..services import services_of

_PUBKEY = re.compile(r"[0-9a-fA-F]{64}")


def _identity_json(identity: IdentityInfo | None) -> dict[str, str] | None:
    if identity is None:
        return None
    return {
        "pubkey": identity.pubkey.hex(),
        "instance_signature": identity.instance_signature.hex(),
        "identity_signature": identity.identity_signature.hex(),
    }


def record_json(record: InstanceRecord) -> dict[str, Any]:
    """The wire form of a record: API.md's fields plus the verdict and times."""
    verdict = record.verdict
    return {
        "instance_pubkey": record.instance_pubkey.hex(),
        "ppid": record.ppid.hex(),
        "attestation_quote": base64.b64encode(record.attestation_quote).decode("ascii"),
        "operator": _identity_json(record.operator),
        "owner": _identity_json(record.owner),
        "verification": {
            "tcb_status": verdict.tcb_status,
            "advisory_ids": list(verdict.advisory_ids),
            "mr_td": verdict.mr_td.hex(),
            "verified_at": verdict.verified_at.isoformat(),
            "skipped": verdict.skipped,
        },
        "registered_at": record.registered_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def instance_blueprint() -> Blueprint:
    """A fresh blueprint (one per app) with GET /instance/{pubkey}."""
    bp = Blueprint("instances")

    @bp.get("/instance/<pubkey:str>")
    async def get_instance(request: Request[Any, Any], pubkey: str) -> HTTPResponse:
        if _PUBKEY.fullmatch(pubkey) is None:
            raise BadRequest("the instance pubkey must be 64 hex characters")
        record = await services_of(request).store.get(bytes.fromhex(pubkey))
        if record is None:
            raise NotFound("no such instance")
        return json(record_json(record))

    return bp
