"""The registry over HTTP (a `RegistryClient`): GET {url}/challenge, the single-use nonce a v2
registration binds; POST {url}/register, accepted or refused; and GET {url}/instance/{pubkey},
the identities the registry's record names."""

from __future__ import annotations

import json

import httpx

from tdx_identity._http import HttpClients
from tdx_identity.core.ports import RegistrationRequest, RegistryRecord
from tdx_identity.exceptions import (
    RegistryRecordMalformed,
    RegistryRejected,
    RegistryUnavailable,
)
from tdx_measure import EventLog, EventLogError, Transition
from tdx_report_data import IdentityFormatError, IdentityInfo

__all__ = ["HttpRegistryClient"]

MAX_REASON_CHARS = 300
MAX_RESPONSE_BYTES = 64 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
CHALLENGE_BYTES = 32


def _reason(body: bytes) -> str:
    """The registry's `{"error": ...}` reason, else a printable prefix of the body."""
    text = body[:MAX_RESPONSE_BYTES].decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        text = parsed["error"]
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return text[:MAX_REASON_CHARS] or "no reason given"


def _identity(record: dict[str, object], role: str) -> IdentityInfo | None:
    """The record's `role` member: null, or an IdentityInfo in its strict JSON form."""
    if role not in record:
        raise RegistryRecordMalformed(f"the registry's record has no {role!r} member")
    value = record[role]
    if value is None:
        return None
    try:
        return IdentityInfo.from_object(value, name=role)
    except IdentityFormatError as exc:
        raise RegistryRecordMalformed(f"the registry's record is malformed: {exc}") from exc


def _workload(record: dict[str, object]) -> tuple[Transition | None, str | None]:
    """The latest transition the record shows, from its `workload` member (absent or null:
    none) and its `event_log` text's latest workload event (absent or null: none), "expose"
    winning; and the image ID the registry accepted: the log's latest workload event's, else
    the `workload` member's."""
    shown: set[str] = set()
    image_id: str | None = None
    workload = record.get("workload")
    if workload is not None:
        member_id = workload.get("image_id") if isinstance(workload, dict) else None
        if (
            not isinstance(workload, dict)
            or workload.get("transition") not in ("configure", "expose")
            or not isinstance(member_id, str | None)
        ):
            raise RegistryRecordMalformed("the registry's record has a malformed 'workload'")
        shown.add(str(workload["transition"]))
        image_id = member_id
    event_log = record.get("event_log")
    if event_log is not None:
        if not isinstance(event_log, str):
            raise RegistryRecordMalformed("the registry's record has a malformed 'event_log'")
        try:
            latest = EventLog.from_json(event_log).workload
        except EventLogError as exc:
            raise RegistryRecordMalformed(
                f"the registry's record carries a malformed event log: {exc.reason}"
            ) from exc
        if latest is not None:
            shown.add(latest.transition)
            image_id = latest.image_id
    if "expose" in shown:
        return "expose", image_id
    return ("configure" if shown else None), image_id


def parse_record(body: bytes) -> RegistryRecord:
    """The operator, owner and latest workload transition of a GET /instance/{pubkey} answer;
    RegistryRecordMalformed for anything but a JSON object whose two identity members are null
    or a well-formed IdentityInfo and whose `workload` and `event_log` (when not null) parse."""
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        raise RegistryRecordMalformed("the registry's record is not JSON") from None
    if not isinstance(record, dict):
        raise RegistryRecordMalformed("the registry's record is not a JSON object")
    transition, image_id = _workload(record)
    return RegistryRecord(
        operator=_identity(record, "operator"),
        owner=_identity(record, "owner"),
        workload=transition,
        workload_image_id=image_id,
    )


def parse_challenge(body: bytes) -> bytes:
    """The nonce of a GET /challenge answer (`{"nonce": "<64 hex>", ...}`); ValueError for
    anything else."""
    if len(body) > MAX_RESPONSE_BYTES:
        raise ValueError("the challenge answer is larger than 64 KiB")
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise ValueError("the challenge answer is nested too deeply") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("nonce"), str):
        raise ValueError("the challenge answer has no string nonce")
    text = parsed["nonce"]
    if len(text) != 2 * CHALLENGE_BYTES or not all(ch in "0123456789abcdefABCDEF" for ch in text):
        raise ValueError(f"the challenge nonce is not {2 * CHALLENGE_BYTES} hex digits")
    return bytes.fromhex(text)


class HttpRegistryClient:
    """The registry over httpx, with a timeout on every phase of each request."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    async def challenge(self) -> bytes:
        url = f"{self._base_url}/challenge"
        async with self._clients.client() as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(
                    f"registry at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
                ) from exc
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"registry at {self._base_url} gave no challenge "
                f"(HTTP {response.status_code}): {_reason(response.content)}"
            )
        try:
            return parse_challenge(response.content)
        except ValueError as exc:
            raise RegistryUnavailable(
                f"registry at {self._base_url} gave a malformed challenge: {exc}"
            ) from exc

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

    async def lookup(self, instance_pubkey: bytes) -> RegistryRecord | None:
        url = f"{self._base_url}/instance/{instance_pubkey.hex()}"
        async with self._clients.client() as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(
                    f"registry at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
                ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"registry at {self._base_url} failed to look up this instance "
                f"(HTTP {response.status_code}): {_reason(response.content)}"
            )
        if len(response.content) > MAX_RECORD_BYTES:
            raise RegistryRecordMalformed("the registry's record is larger than 16 MiB")
        return parse_record(response.content)
