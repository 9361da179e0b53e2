"""The registry as the identity service sees it: POST /register, accepted or refused."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from tdx_identity._http import HttpClients
from tdx_report_data import IdentityInfo

MAX_REASON_CHARS = 300
MAX_RESPONSE_BYTES = 64 * 1024


class RegistryError(Exception):
    """The registry did not accept a registration."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out, or answered other than 200 or a 4xx refusal
    (5xx, 429, a redirect)."""


class RegistryRejected(RegistryError):
    """The registry refused the registration with a 4xx status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"registry refused the registration (HTTP {status}): {reason}")
        self.status = status
        self.reason = reason


def identity_to_json(identity: IdentityInfo | None) -> dict[str, str] | None:
    """API.md's IdentityInfo object (lowercase hex), or None."""
    if identity is None:
        return None
    return {
        "pubkey": identity.pubkey.hex(),
        "instance_signature": identity.instance_signature.hex(),
        "identity_signature": identity.identity_signature.hex(),
    }


@dataclass(frozen=True)
class RegistrationRequest:
    """The body of the registry's POST /register. `event_log` is the RTMR3 event log's JSON
    text (`tdx_measure.EventLog.to_json()`) that explains the quote's RTMR3."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    event_log: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body; `"event_log"` is present only when there is a log."""
        body: dict[str, Any] = {
            "instance_pubkey": self.instance_pubkey.hex(),
            "ppid": self.ppid.hex(),
            "attestation_quote": base64.b64encode(self.attestation_quote).decode("ascii"),
            "operator": identity_to_json(self.operator),
            "owner": identity_to_json(self.owner),
        }
        if self.event_log is not None:
            body["event_log"] = self.event_log
        return body


class RegistryClient(Protocol):
    """Records an instance's registration; returns only when the registry answered 200."""

    async def register(self, request: RegistrationRequest) -> None: ...


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
