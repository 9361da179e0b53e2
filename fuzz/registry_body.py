"""The registry's `POST /register` body: `parse_json_object` (what `json_body` runs on the raw
bytes) then `parse_registration`.

Refusing is the service kit's `BadRequest` (400) or `tdx_measure.EventLogError` (a malformed
`event_log`; the route answers 400 for it too). An accepted request must have the sizes the
registry stores.
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_measure import EventLogError
from tdx_quote import MAX_QUOTE_SIZE
from tdx_registry.registration import parse_registration
from tdx_service_kit import BadRequest, parse_json_object


def target(data: bytes) -> None:
    if not data:
        return  # json_body answers 400 for an empty body before parsing
    request = parse_registration(parse_json_object(data))
    if len(request.instance_pubkey) != 32 or not 1 <= len(request.attestation_quote) <= (
        MAX_QUOTE_SIZE
    ):
        raise Finding("parse_registration accepted a key or quote of the wrong size")
    if (request.challenge is None) != (request.instance_signature is None):
        raise Finding("a challenge without its signature (or the reverse) was accepted")


HARNESS = Harness(
    name="registry_body",
    summary="the registry's POST /register body: parse_json_object + parse_registration",
    target=target,
    allowed=(BadRequest, EventLogError),
)
