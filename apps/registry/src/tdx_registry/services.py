"""The objects request handlers work with, built once per app at server start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sanic import Request

from .challenges import Challenges
from .read_cache import ReadCache
from .registration import Registrar
from .store import RecordStore
from .verification import QuoteVerifier


@dataclass(frozen=True)
class Services:
    """The store, the quote verifier, the challenges, the registrar that uses them, and the GET
    answer cache."""

    store: RecordStore
    verifier: QuoteVerifier
    challenges: Challenges
    registrar: Registrar
    read_cache: ReadCache
    any_measurement: bool = False
    """`--any-measurement`: every accepted registration is logged as UNPINNED."""


def services_of(request: Request[Any, Any]) -> Services:
    """The app's `Services` (set by the server-start listener)."""
    services: Services = request.app.ctx.services
    return services
