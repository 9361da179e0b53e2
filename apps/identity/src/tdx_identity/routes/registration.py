"""Operator and owner registration (API.md: POST /operator/register, POST /owner/register)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from tdx_identity.routes._common import service_of
from tdx_service_kit import json_body, require_hex

registration_bp = Blueprint("registration")


def _identity_body(request: Request) -> tuple[bytes, bytes]:
    body = json_body(request)
    return require_hex(body, "pubkey", length=32), require_hex(body, "signature", length=64)


@registration_bp.post("/operator/register")
async def register_operator(request: Request) -> HTTPResponse:
    """Register the operator key; answer the single-use owner token."""
    pubkey, signature = _identity_body(request)
    token = await service_of(request).register_operator(pubkey, signature)
    return json({"status": "success", "owner_token": token})


@registration_bp.post("/owner/register")
async def register_owner(request: Request) -> HTTPResponse:
    """Register the owner key, authorized by the operator's `x-token`."""
    pubkey, signature = _identity_body(request)
    await service_of(request).register_owner(request.headers.get("x-token"), pubkey, signature)
    return json({"status": "success"})
