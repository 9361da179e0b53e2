"""GET /instance/{pubkey}: the stored record of one instance, with its verdict and event log."""

from __future__ import annotations

import base64
import json as json_module
import re
from datetime import datetime
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_service_kit import BadRequest, NotFound

from ..records import InstanceRecord, PastVerdict
from ..services import services_of
from ..store import RecordStore, StoreError

_PUBKEY = re.compile(r"[0-9a-fA-F]{64}")
JSON_CONTENT_TYPE = "application/json"


def _time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def past_verdict_json(past: PastVerdict) -> dict[str, Any]:
    """A replaced verdict as `verification.history` lists it."""
    return {
        "tcb_status": past.tcb_status,
        "advisory_ids": list(past.advisory_ids),
        "tcb_grace_until": _time_or_none(past.tcb_grace_until),
        "refused": past.refused,
        "skipped": past.skipped,
        "verified_at": past.verified_at.isoformat(),
        "replaced_at": past.replaced_at.isoformat(),
    }


def record_json(record: InstanceRecord) -> dict[str, Any]:
    """The wire form of a record: API.md's fields plus the verdict, times and event log."""
    verdict = record.verdict
    return {
        "instance_pubkey": record.instance_pubkey.hex(),
        "ppid": record.ppid.hex(),
        "attestation_quote": base64.b64encode(record.attestation_quote).decode("ascii"),
        "operator": record.operator.to_object() if record.operator is not None else None,
        "owner": record.owner.to_object() if record.owner is not None else None,
        "verification": {
            "tcb_status": verdict.tcb_status,
            "advisory_ids": list(verdict.advisory_ids),
            "mr_td": verdict.mr_td.hex(),
            "verified_at": verdict.verified_at.isoformat(),
            "skipped": verdict.skipped,
            "tcb_grace_until": _time_or_none(verdict.tcb_grace_until),
            "refused": verdict.refused,
            "history": [past_verdict_json(past) for past in record.verdict_history],
        },
        "registered_at": record.registered_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "rtmr3": None if verdict.rtmr3 is None else verdict.rtmr3.hex(),
        "event_log": record.event_log,
        "workload": record.workload.to_object() if record.workload is not None else None,
        "ssh_host_key": record.ssh_host_key,
        "event_log_history_count": len(record.event_log_history),
        "binding_version": record.binding_version,
        "challenge": None if record.challenge is None else record.challenge.hex(),
        "proof_of_possession": (
            None if record.proof_of_possession is None else record.proof_of_possession.hex()
        ),
        "log_index": record.log_index,
        "ccel": _ccel_json(record),
    }


def _ccel_json(record: InstanceRecord) -> dict[str, Any] | None:
    """The measured boot of the record's CCEL (`ccel_check.StoredCcel.summary`), or None."""
    if record.ccel_summary is None:
        return None
    try:
        summary: dict[str, Any] = json_module.loads(record.ccel_summary)
    except ValueError as exc:
        raise StoreError(f"the stored ccel summary does not decode: {exc}") from None
    return summary


async def _serialized_record(store: RecordStore, key: bytes) -> bytes | None:
    """The JSON answer for `key` read from the store, None if the instance is unknown."""
    record = await store.get(key)
    if record is None:
        return None
    body = json(record_json(record)).body
    if body is None:
        raise RuntimeError("Sanic serialized a record to no body")
    return body


def instance_blueprint() -> Blueprint:
    """A fresh blueprint (one per app) with GET /instance/{pubkey}, answered from the
    process's read cache while fresh (see `read_cache`)."""
    bp = Blueprint("instances")

    @bp.get("/instance/<pubkey:str>")
    async def get_instance(request: Request[Any, Any], pubkey: str) -> HTTPResponse:
        if _PUBKEY.fullmatch(pubkey) is None:
            raise BadRequest("the instance pubkey must be 64 hex characters")
        key = bytes.fromhex(pubkey)
        services = services_of(request)
        cache = services.read_cache
        body = cache.get(key)
        if body is None:
            body = await cache.get_or_load(key, lambda: _serialized_record(services.store, key))
            if body is None:
                raise NotFound("no such instance")
        return HTTPResponse(body, content_type=JSON_CONTENT_TYPE)

    return bp
