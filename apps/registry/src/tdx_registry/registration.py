"""POST /register's rules: the strict request shape, the checks in order, and the merge rule.

Checks, in order: body shape (400) → both signatures of each identity (401) → the quote (DCAP,
or parse-only under SKIP_TDX_AUTH) → its report_data commits to exactly this request (401) →
its PPID is the request's PPID (401) → in one transaction, a known instance keeps its PPID,
operator and owner (403), else the record is written or refreshed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tdx_quote import MAX_QUOTE_SIZE
from tdx_report_data import (
    ED25519_PUBKEY_LEN,
    ED25519_SIGNATURE_LEN,
    MAX_PPID_LEN,
    IdentityInfo,
    report_data_for,
    verify_identity,
)
from tdx_service_kit import BadRequest, require_hex

from .records import InstanceRecord
from .store import RecordStore
from .verification import QuoteVerifier

REQUEST_FIELDS = frozenset({"instance_pubkey", "ppid", "attestation_quote", "operator", "owner"})
IDENTITY_FIELDS = frozenset({"pubkey", "instance_signature", "identity_signature"})


class RegistrationError(Exception):
    """A registration the registry refuses; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BindingError(RegistrationError):
    """The quote does not commit to this request (report_data or PPID differ)."""


class RegistrationConflict(RegistrationError):
    """The instance is known with another PPID, operator or owner."""


@dataclass(frozen=True)
class RegistrationRequest:
    """A well-formed POST /register body, decoded."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None


def _reject_unknown(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) in {where}: {', '.join(unknown)}")


def _parse_identity(body: Mapping[str, Any], name: str) -> IdentityInfo | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"field {name!r} must be an object or null")
    _reject_unknown(value, IDENTITY_FIELDS, name)
    return IdentityInfo(
        pubkey=require_hex(value, "pubkey", length=ED25519_PUBKEY_LEN, label=f"{name}.pubkey"),
        instance_signature=require_hex(
            value,
            "instance_signature",
            length=ED25519_SIGNATURE_LEN,
            label=f"{name}.instance_signature",
        ),
        identity_signature=require_hex(
            value,
            "identity_signature",
            length=ED25519_SIGNATURE_LEN,
            label=f"{name}.identity_signature",
        ),
    )


def _parse_quote(body: Mapping[str, Any]) -> bytes:
    value = body.get("attestation_quote")
    if not isinstance(value, str):
        raise BadRequest("field 'attestation_quote' must be a base64 string")
    try:
        quote = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("field 'attestation_quote' is not valid base64") from None
    if not quote:
        raise BadRequest("field 'attestation_quote' is empty")
    if len(quote) > MAX_QUOTE_SIZE:
        raise BadRequest(f"field 'attestation_quote' is larger than {MAX_QUOTE_SIZE} bytes")
    return quote


def parse_registration(body: Mapping[str, Any]) -> RegistrationRequest:
    """Decode and shape-check a POST /register body; `BadRequest` naming the field otherwise."""
    _reject_unknown(body, REQUEST_FIELDS, "the request")
    instance_pubkey = require_hex(body, "instance_pubkey", length=ED25519_PUBKEY_LEN)
    ppid = require_hex(body, "ppid")
    if not 1 <= len(ppid) <= MAX_PPID_LEN:
        raise BadRequest(f"field 'ppid' must be 1 to {MAX_PPID_LEN} bytes")
    quote = _parse_quote(body)
    operator = _parse_identity(body, "operator")
    owner = _parse_identity(body, "owner")
    if owner is not None and operator is None:
        raise BadRequest("an owner can only be registered together with an operator")
    return RegistrationRequest(instance_pubkey, ppid, quote, operator, owner)


def _same_key(a: IdentityInfo, b: IdentityInfo) -> bool:
    return hmac.compare_digest(a.pubkey, b.pubkey)


def merge_registration(existing: InstanceRecord | None, new: InstanceRecord) -> InstanceRecord:
    """The record to store for `new` given the stored one; `RegistrationConflict` if it changes
    anything fixed once set. Unset identities may be added; the same data again refreshes the
    quote, the signatures and the verdict, keeping the first registration time."""
    if existing is None:
        return new
    if not hmac.compare_digest(existing.ppid, new.ppid):
        raise RegistrationConflict("this instance is registered with another PPID")
    for role in ("operator", "owner"):
        old_identity: IdentityInfo | None = getattr(existing, role)
        new_identity: IdentityInfo | None = getattr(new, role)
        if old_identity is None:
            continue
        if new_identity is None:
            raise RegistrationConflict(f"this instance has an {role}; it cannot be removed")
        if not _same_key(old_identity, new_identity):
            raise RegistrationConflict(f"this instance is registered with another {role}")
    return replace(new, registered_at=existing.registered_at)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Registrar:
    """Runs the checks of POST /register and stores the accepted record."""

    def __init__(
        self,
        verifier: QuoteVerifier,
        store: RecordStore,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._verifier = verifier
        self._store = store
        self._clock = clock

    async def register(self, request: RegistrationRequest) -> InstanceRecord:
        """Verify `request` and store it; raise a library or `RegistrationError` on refusal."""
        for identity in (request.operator, request.owner):
            if identity is not None:
                verify_identity(request.instance_pubkey, identity)
        checked = await self._verifier.check(request.attestation_quote, now=self._clock())
        expected = report_data_for(
            request.instance_pubkey, request.ppid, request.operator, request.owner
        )
        if not hmac.compare_digest(checked.report_data, expected):
            raise BindingError(
                "the quote's report_data does not commit to this request "
                "(instance key, PPID, operator and owner)"
            )
        if not hmac.compare_digest(checked.ppid, request.ppid):
            raise BindingError("the quote's PPID does not match the request's ppid")
        now = self._clock()
        new = InstanceRecord(
            instance_pubkey=request.instance_pubkey,
            ppid=request.ppid,
            attestation_quote=request.attestation_quote,
            operator=request.operator,
            owner=request.owner,
            verdict=checked.verdict,
            registered_at=now,
            updated_at=now,
        )
        return await self._store.register(
            request.instance_pubkey, lambda existing: merge_registration(existing, new)
        )
