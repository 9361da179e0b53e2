"""The identity service's request bodies.

The first byte picks the route, the rest is the raw body: 0, `/operator/register` and
`/owner/register` (`json_body` + `require_hex` of pubkey and signature, as the route reads
them); 1, `/workload/configure` (`parse_configure`); 2, `/workload/expose` (`parse_expose`);
odd and even values above those alternate `accept_unsequenced` (v1 bodies). Refusing is the
service kit's `BadRequest` or the identity service's `InvalidRequest` and `WorkloadAuthError`.
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_identity.exceptions import InvalidRequest, WorkloadAuthError
from tdx_identity.workload.requests import parse_configure, parse_expose
from tdx_service_kit import BadRequest, parse_json_object, require_hex

INSTANCE_PUBKEY = bytes(range(32))


def target(data: bytes) -> None:
    if not data:
        return
    route, body, unsequenced = data[0] % 3, data[1:], data[0] >= 3
    if route == 0:
        if not body:
            return  # json_body answers 400 for an empty body before parsing
        obj = parse_json_object(body)
        pubkey = require_hex(obj, "pubkey", length=32)
        signature = require_hex(obj, "signature", length=64)
        if len(pubkey) != 32 or len(signature) != 64:
            raise Finding("require_hex accepted the wrong length")
    elif route == 1:
        request = parse_configure(body, INSTANCE_PUBKEY, accept_unsequenced=unsequenced)
        if request.seq is None and not unsequenced:
            raise Finding("an unsequenced configure body was accepted")
    else:
        exposed = parse_expose(body, INSTANCE_PUBKEY, accept_unsequenced=unsequenced)
        if exposed.seq is None and not unsequenced:
            raise Finding("an unsequenced expose body was accepted")


HARNESS = Harness(
    name="identity_body",
    summary="the identity service's bodies: register, parse_configure, parse_expose",
    target=target,
    allowed=(BadRequest, InvalidRequest, WorkloadAuthError),
)
