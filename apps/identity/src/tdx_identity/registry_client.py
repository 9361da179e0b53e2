"""The registry over HTTP (a `RegistryClient`): POST {url}/register, accepted or refused."""

from __future__ import annotations

import json

import httpx

from tdx_identity._http import HttpClients
from tdx_identity.core.ports import RegistrationRequest
from tdx_identity.exceptions import RegistryRejected, RegistryUnavailable

__all__ = ["HttpRegistryClient"]

MAX_REASON_CHARS = 300
MAX_RESPONSE_BYTES = 64 * 1024


def _reason(body: bytes) -> str:
    """The registry's `{"error": ...}` reason, else a printable prefix of the body."""
    text = body[:MAX_RESPONSE_BYTES].decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        text = parsed["error"]
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return text[:MAX_REASON_CHARS] or "no reason given"


class HttpRegistryClient:
    """POST {base_url}/register over httpx, with a timeout on every phase of the request."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    async def register(self, request: RegistrationRequest) -> None:
        url = f"{self._base_url}/register"
        async with self._clients.client() as client:
            try:
                response = await client.post(url, json=request.to_json())
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(
                    f"registry at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
                ) from exc
        if response.status_code == 200:
            return
        reason = _reason(response.content)
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise RegistryRejected(response.status_code, reason)
        raise RegistryUnavailable(
            f"registry at {self._base_url} failed (HTTP {response.status_code}): {reason}"
        )
