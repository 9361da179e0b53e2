"""The base exceptions of the identity service; `errors.py` maps them to HTTP statuses."""

from __future__ import annotations


class StartupError(Exception):
    """The service cannot start; the message says what to fix. Printed as one log line."""


class InvalidRequest(ValueError):
    """A request body or header is malformed (HTTP 400)."""
