"""GET /challenge: a fresh single-use nonce for the next v2 registration."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from ..services import services_of


def challenge_blueprint() -> Blueprint:
    """A fresh blueprint (one per app) with GET /challenge (never cached by anyone)."""
    bp = Blueprint("challenges")

    @bp.get("/challenge")
    async def get_challenge(request: Request[Any, Any]) -> HTTPResponse:
        challenge = await services_of(request).challenges.issue()
        return json(challenge.to_object(), headers={"Cache-Control": "no-store"})

    return bp
