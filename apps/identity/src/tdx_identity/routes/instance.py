"""Public facts about the instance: its key, its lifecycle state, its RTMR3 event log, and a
fresh attestation answering a verifier's nonce."""

from __future__ import annotations

import base64
import re

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, text

from tdx_identity.exceptions import InvalidRequest
from tdx_identity.routes._common import front_of, service_of, workload_of, workload_status
from tdx_report_data import MAX_NONCE_LEN, MIN_NONCE_LEN

_NONCE_RE = re.compile(r"(?:[0-9a-fA-F]{2})*", re.ASCII)

instance_bp = Blueprint("instance")


@instance_bp.get("/instance/pubkey")
async def instance_pubkey(request: Request) -> HTTPResponse:
    """The instance's ed25519 public key, hex."""
    return json({"pubkey": service_of(request).instance_pubkey.hex()})


@instance_bp.get("/instance/state")
async def instance_state(request: Request) -> HTTPResponse:
    """The lifecycle state name, the last accepted owner seq, where the comparison of the
    state's identities with the registry's record stands, and whether the workload runs, was
    refused at recovery, or is locked (the key broker has not released the store key), and
    why (carry no secret); the attested front's state and its TLS key's SPKI SHA-256."""
    service = service_of(request)
    state, comparison = service.state, service.comparison
    status, reason = workload_status(service, workload_of(request))
    front = front_of(request)
    return json(
        {
            "state": state.lifecycle.value,
            "last_seq": state.last_seq,
            "registry_comparison": {
                "status": comparison.status.value,
                "reason": comparison.reason,
            },
            "workload": status,
            "workload_reason": reason,
            "front": str(front.state),
            "tls_spki_sha256": front.spki_sha256.hex(),
        }
    )


def _nonce(request: Request) -> bytes:
    """The one `nonce` query parameter: hex of 16 to 64 bytes; InvalidRequest (400) otherwise."""
    values = request.get_args(keep_blank_values=True).getlist("nonce")
    if len(values) != 1:
        raise InvalidRequest("exactly one nonce query parameter is required")
    [value] = values
    if _NONCE_RE.fullmatch(value) is None:
        raise InvalidRequest("nonce must be an even number of hex digits")
    nonce = bytes.fromhex(value)
    if not MIN_NONCE_LEN <= len(nonce) <= MAX_NONCE_LEN:
        raise InvalidRequest(f"nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes")
    return nonce


@instance_bp.get("/instance/attestation")
async def instance_attestation(request: Request) -> HTTPResponse:
    """A fresh quote over the challenge binding of (instance key, nonce), with the RTMR3 event
    log it was taken under."""
    service = service_of(request)
    answer = await service.attest_challenge(_nonce(request))
    return json(
        {
            "instance_pubkey": service.instance_pubkey.hex(),
            "nonce": answer.nonce.hex(),
            "quote": base64.b64encode(answer.quote).decode("ascii"),
            "event_log": answer.event_log,
        }
    )


@instance_bp.get("/instance/eventlog")
async def instance_eventlog(request: Request) -> HTTPResponse:
    """The RTMR3 event log as far as it is extended into RTMR3 (tdx-measure's canonical JSON
    text; an addition to API.md)."""
    return text(service_of(request).event_log_json(), content_type="application/json")
