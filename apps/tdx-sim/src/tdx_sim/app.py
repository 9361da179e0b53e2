"""HTTP face of the simulator: quotes on `/attest`, the TD's RTMRs on `/rtmr`, Intel's PCCS
v4 API for the sim PKI, and `/pccs/...` to publish a TCB recovery or a PCK revocation."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, raw, text

from tdx_service_kit import (
    BadRequest,
    HttpLimits,
    NotFound,
    OpenApiDocument,
    install_common,
    install_ops,
    json_body,
    parse_hex,
    require_hex,
)

from .ccel import SIM_CCEL
from .platform import SimCollateral, SimOptions, SimPlatform, TcbRecoveryError
from .rtmr import RtmrError

log = logging.getLogger("tdx_sim")

# Collateral is re-issued this long after its issue time, well inside its 30-day validity.
COLLATERAL_REFRESH = timedelta(hours=12)
_FMSPC = re.compile(r"[0-9A-Fa-f]{12}")
_RTMR_INDEX = re.compile(r"0|[1-9][0-9]{0,3}")
_ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_MAX_ADVISORIES = 64


@dataclass(frozen=True)
class SimSettings:
    """Everything the simulator needs, parsed once from the command line."""

    state_dir: Path
    options: SimOptions = field(default_factory=SimOptions)
    host: str = "127.0.0.1"
    port: int = 3010
    log_level: str = "INFO"


class _CollateralSource:
    """Issues the collateral and reuses it until it is `COLLATERAL_REFRESH` old, or until
    something is published (`SimPlatform.revision`), so the four PCCS routes a client calls in a
    row answer from one consistent issue."""

    def __init__(self, platform: SimPlatform) -> None:
        self._platform = platform
        self._current: tuple[SimCollateral, int] | None = None

    def get(self) -> SimCollateral:
        now = datetime.now(UTC)
        revision = self._platform.revision
        current = self._current
        if (
            current is None
            or current[1] != revision
            or now >= current[0].issued_at + COLLATERAL_REFRESH
        ):
            current = (self._platform.collateral_bundle(now), revision)
            self._current = current
        return current[0]


def _single_arg(request: Request, name: str, *, required: bool) -> str | None:
    values = request.args.getlist(name)
    if not values:
        if required:
            raise BadRequest(f"query parameter {name!r} is missing")
        return None
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} is given more than once")
    value: str = values[0]
    return value


def _check_update(request: Request) -> None:
    update = _single_arg(request, "update", required=False)
    if update is not None and update not in ("standard", "early"):
        raise BadRequest("query parameter 'update' must be 'standard' or 'early'")


def _rtmr_index(value: str) -> int:
    if _RTMR_INDEX.fullmatch(value) is None:
        raise BadRequest(
            f"RTMR index {value!r} is not a number; only RTMR2 and RTMR3 can be extended"
        )
    return int(value)


def _extend_digest(request: Request) -> bytes:
    body = json_body(request)
    unexpected = sorted(set(body) - {"digest"})
    if unexpected:
        raise BadRequest(
            f"unexpected field(s) {', '.join(map(repr, unexpected))}; expected 'digest'"
        )
    return require_hex(body, "digest", length=48)


def _recovery_request(request: Request) -> tuple[datetime, list[str]]:
    body = json_body(request)
    unexpected = sorted(set(body) - {"tcb_date", "advisory_ids"})
    if unexpected:
        raise BadRequest(
            f"unexpected field(s) {', '.join(map(repr, unexpected))}; "
            "expected 'tcb_date', 'advisory_ids'"
        )
    tcb_date = datetime.now(UTC)
    if "tcb_date" in body:
        text = body["tcb_date"]
        if not isinstance(text, str) or _ISO_UTC.fullmatch(text) is None:
            raise BadRequest("field 'tcb_date' must be a UTC time like 2026-01-31T00:00:00Z")
        try:
            tcb_date = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"field 'tcb_date' {text!r} is not a valid time") from None
    advisories = body.get("advisory_ids", [])
    if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
        raise BadRequest("field 'advisory_ids' must be a list of strings")
    if len(advisories) > _MAX_ADVISORIES:
        raise BadRequest(f"field 'advisory_ids' has more than {_MAX_ADVISORIES} items")
    return tcb_date, advisories


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _issuer_chain_header(chain_pem: str) -> str:
    return url_quote(chain_pem, safe="")


def create_app(settings: SimSettings) -> Sanic[Any, Any]:
    """Build the simulator app; the state directory's PKI is loaded (or created) here."""
    platform = SimPlatform(settings.state_dir, settings.options)
    collateral = _CollateralSource(platform)
    root_der = x509.load_pem_x509_certificate(platform.root_ca_pem).public_bytes(
        serialization.Encoding.DER
    )
    app: Sanic[Any, Any] = Sanic("tdx_sim", configure_logging=False)
    install_common(app, limits=HttpLimits(max_body_bytes=4096), rate_limit=None)
    install_ops(app, openapi=OpenApiDocument.from_package("tdx_sim", "openapi.json"))
    app.ctx.platform = platform

    log.info(
        "simulated TDX platform ready",
        extra={
            "state_dir": str(settings.state_dir),
            "fmspc": platform.fmspc.hex(),
            "debug_td": settings.options.debug_td,
            "tcb_status": settings.options.tcb_status,
            "revoke_pck": settings.options.revoke_pck,
            "mr_td": settings.options.mr_td.hex(),
            "root_ca_sha256": hashlib.sha256(root_der).hexdigest(),
        },
    )

    @app.get("/attest/<report_data_hex:str>")
    async def attest(request: Request, report_data_hex: str) -> HTTPResponse:
        report_data = parse_hex(report_data_hex, "report_data", length=64)
        return raw(platform.quote(report_data), content_type="application/octet-stream")

    @app.post("/rtmr/<index_text:str>/extend")
    async def rtmr_extend(request: Request, index_text: str) -> HTTPResponse:
        index = _rtmr_index(index_text)
        digest = _extend_digest(request)
        try:
            value = platform.rtmrs.extend(index, digest)
        except RtmrError as exc:
            raise BadRequest(str(exc)) from None
        log.info(
            "rtmr extended", extra={"index": index, "digest": digest.hex(), "value": value.hex()}
        )
        return json({"index": index, "value": value.hex()})

    @app.get("/ccel")
    async def ccel(request: Request) -> HTTPResponse:
        return raw(SIM_CCEL, content_type="application/octet-stream")

    @app.get("/rtmr")
    async def rtmr_read(request: Request) -> HTTPResponse:
        values = platform.rtmrs.read()
        return json({f"rtmr{i}": value.hex() for i, value in enumerate(values)})

    @app.post("/pccs/tcb-recovery")
    async def tcb_recovery(request: Request) -> HTTPResponse:
        tcb_date, advisories = _recovery_request(request)
        try:
            recovery = platform.publish_tcb_recovery(tcb_date=tcb_date, advisory_ids=advisories)
        except TcbRecoveryError as exc:
            raise BadRequest(str(exc)) from None
        answer = {
            "tcb_date": _iso(recovery.tcb_date),
            "advisory_ids": list(recovery.advisory_ids),
            "tcb_evaluation_data_number": recovery.evaluation_data_number,
        }
        log.info("TCB recovery published", extra=answer)
        return json(answer)

    @app.post("/pccs/revoke-pck")
    async def revoke_pck(request: Request) -> HTTPResponse:
        if request.body and json_body(request):
            raise BadRequest("the body must be empty or {}")
        serial = platform.revoke_pck()
        log.info("PCK certificate revoked", extra={"serial": f"{serial:x}"})
        return json({"revoked_serial": f"{serial:x}"})

    @app.get("/root_ca.pem")
    async def root_ca(request: Request) -> HTTPResponse:
        return raw(platform.root_ca_pem, content_type="application/x-pem-file")

    @app.get("/sgx/certification/v4/pckcrl")
    async def pck_crl(request: Request) -> HTTPResponse:
        ca = _single_arg(request, "ca", required=True)
        if ca not in ("platform", "processor"):
            raise BadRequest("query parameter 'ca' must be 'platform' or 'processor'")
        encoding = _single_arg(request, "encoding", required=False) or "pem"
        if encoding not in ("der", "pem"):
            raise BadRequest("query parameter 'encoding' must be 'der' or 'pem'")
        if ca == "processor":
            raise NotFound("this platform's PCK certificate is issued by the platform CA")
        current = collateral.get()
        headers = {"SGX-PCK-CRL-Issuer-Chain": _issuer_chain_header(current.pck_crl_issuer_chain)}
        if encoding == "der":
            return raw(current.pck_crl, content_type="application/pkix-crl", headers=headers)
        crl = x509.load_der_x509_crl(current.pck_crl)
        return raw(
            crl.public_bytes(serialization.Encoding.PEM),
            content_type="application/x-pem-file",
            headers=headers,
        )

    @app.get("/tdx/certification/v4/tcb")
    async def tcb_info(request: Request) -> HTTPResponse:
        fmspc = _single_arg(request, "fmspc", required=True) or ""
        if _FMSPC.fullmatch(fmspc) is None:
            raise BadRequest("query parameter 'fmspc' must be 6 bytes of hex")
        _check_update(request)
        if bytes.fromhex(fmspc) != platform.fmspc:
            raise NotFound(f"no TCB info for FMSPC {fmspc.upper()}")
        current = collateral.get()
        return raw(
            current.tcb_info_body().encode(),
            content_type="application/json",
            headers={"TCB-Info-Issuer-Chain": _issuer_chain_header(current.tcb_info_issuer_chain)},
        )

    @app.get("/tdx/certification/v4/qe/identity")
    async def qe_identity(request: Request) -> HTTPResponse:
        _check_update(request)
        current = collateral.get()
        return raw(
            current.qe_identity_body().encode(),
            content_type="application/json",
            headers={
                "SGX-Enclave-Identity-Issuer-Chain": _issuer_chain_header(
                    current.qe_identity_issuer_chain
                )
            },
        )

    @app.get("/sgx/certification/v4/rootcacrl")
    async def root_ca_crl(request: Request) -> HTTPResponse:
        return text(collateral.get().root_ca_crl.hex())

    return app
