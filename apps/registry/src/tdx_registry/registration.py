"""POST /register's rules: the strict request shape, the checks in order, and the merge rule.

Checks, in order: body shape, including a strictly parsed event log (400) → a v1 body (no
challenge) only in compatibility mode (401) → the challenge is open (stored, unexpired), and is
consumed whatever the outcome: by the record's own transaction on success (one commit; a request
that lost it to another is refused 401 there, before the merge rule), by a transaction of its
own on any refusal (401) → both signatures of each identity, v2 with their role (401) → the
instance key's proof of possession over the challenge and the expected report_data (401) → an
event log is present if the measurement policy needs one (401) → the quote (DCAP, or parse-only
under SKIP_TDX_AUTH) → its report_data commits to exactly this request (401) → its PPID is the
request's PPID (401) → the event log replays to the quote's RTMR3, the measurement policy
accepts its events, and its latest operator/owner identity events (when it has them) name the
request's identities (401) → the ccel, when present (or required by a kernel or command-line
pin), replays to the quote's RTMR0-2 and the pins accept it (`ccel_check`, 401) → in one
transaction, a known instance keeps its PPID, operator and owner (403) and never goes back
(403), else the record is written or refreshed (a replaced event log goes to the record's
history).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from tdx_measure import (
    EventLog,
    EventLogError,
    IdentityRole,
    MeasurementPolicy,
    VerifiedLog,
    check_log,
    verify_log,
)
from tdx_quote import MAX_QUOTE_SIZE
from tdx_report_data import (
    ED25519_PUBKEY_LEN,
    ED25519_SIGNATURE_LEN,
    MAX_PPID_LEN,
    IdentityFormatError,
    IdentityInfo,
    Role,
    SignatureError,
    report_data_for,
    report_data_for_v2,
    verify_identity,
    verify_identity_v2,
    verify_possession,
)
from tdx_service_kit import BadRequest, require_hex

from .ccel_check import CcelPolicy, ReceivedCcel, check_ccel, parse_ccel_field
from .challenges import NONCE_LEN, ChallengeRefused, Challenges
from .challenges import REFUSED as CHALLENGE_REFUSED
from .records import InstanceRecord
from .store import ChallengeNotConsumed, Consume, RecordStore, StoreError
from .verification import QuoteVerifier

log = logging.getLogger("tdx_registry.registration")

REQUEST_FIELDS = frozenset(
    {
        "instance_pubkey",
        "ppid",
        "attestation_quote",
        "operator",
        "owner",
        "event_log",
        "challenge",
        "instance_signature",
        "ccel",
    }
)
EVENT_LOG_HISTORY_LIMIT = 64
"""How many replaced event logs a record keeps (the most recent ones)."""


class RegistrationError(Exception):
    """A registration the registry refuses; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BindingError(RegistrationError):
    """The quote does not commit to this request (report_data or PPID differ)."""


class V1RegistrationRefused(RegistrationError):
    """A v1 body (no challenge, v1 binding) while compatibility mode is off."""


class PossessionRefused(RegistrationError):
    """The body's `instance_signature` is not the instance key's proof of possession over its
    challenge and report_data."""


class RegistrationConflict(RegistrationError):
    """The instance is known with another PPID, operator or owner."""


class RegressionRefused(RegistrationConflict):
    """The registration would move the record back: an unverified quote over a verified record,
    a v1 registration over a v2 record, a workload lifecycle that goes backwards, or a log of
    the stored boot that does not extend the stored log. `reason` names the rule."""


class IdentityEventMismatch(RegistrationError):
    """The event log's latest operator or owner event names another key than the request."""


class EventLogRequired(RegistrationError):
    """The registration came without an event log, and this registry requires one (the default;
    always once the measurement policy pins anything)."""


@dataclass(frozen=True)
class RegistrationRequest:
    """A well-formed POST /register body, decoded."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    event_log: EventLog | None = None
    challenge: bytes | None = None
    instance_signature: bytes | None = None
    ccel: ReceivedCcel | None = None

    @property
    def binding_version(self) -> int:
        """2 when the body names a registry challenge (and carries its proof), else 1."""
        return 1 if self.challenge is None else 2


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
    try:
        return IdentityInfo.from_object(value, name=name)
    except IdentityFormatError as exc:
        raise BadRequest(f"field '{exc.field}' {exc.reason}") from None


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


def _parse_event_log(body: Mapping[str, Any]) -> EventLog | None:
    """The optional `event_log`: `EventLog.to_json()` text, parsed strictly (`EventLogError`)."""
    value = body.get("event_log")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("field 'event_log' must be the event log's JSON text (a string) or null")
    return EventLog.from_json(value)


def parse_registration(body: Mapping[str, Any]) -> RegistrationRequest:
    """Decode and shape-check a POST /register body; `BadRequest` naming the field otherwise,
    `tdx_measure.EventLogError` for a malformed event log."""
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
    event_log = _parse_event_log(body)
    has_challenge = body.get("challenge") is not None
    if has_challenge != (body.get("instance_signature") is not None):
        raise BadRequest(
            "fields 'challenge' and 'instance_signature' come together (a v2 registration) "
            "or not at all"
        )
    challenge = signature = None
    if has_challenge:
        challenge = require_hex(body, "challenge", length=NONCE_LEN)
        signature = require_hex(body, "instance_signature", length=ED25519_SIGNATURE_LEN)
    return RegistrationRequest(
        instance_pubkey,
        ppid,
        quote,
        operator,
        owner,
        event_log,
        challenge,
        signature,
        parse_ccel_field(body),
    )


def _same_key(a: IdentityInfo, b: IdentityInfo) -> bool:
    return hmac.compare_digest(a.pubkey, b.pubkey)


def _event_log_history(existing: InstanceRecord, new_log: str | None) -> tuple[str, ...]:
    """The stored history plus the current log when `new_log` replaces it, newest kept."""
    if existing.event_log is None or existing.event_log == new_log:
        return existing.event_log_history
    return (*existing.event_log_history, existing.event_log)[-EVENT_LOG_HISTORY_LIMIT:]


_STAGES: Final[dict[str | None, int]] = {None: 0, "configure": 1, "expose": 2}


def _stored_log(record: InstanceRecord) -> EventLog | None:
    if record.event_log is None:
        return None
    try:
        return EventLog.from_json(record.event_log)
    except EventLogError as exc:
        raise StoreError(f"the stored event log does not parse: {exc.reason}") from None


def _stage(log: EventLog | None) -> int:
    workload = None if log is None else log.workload
    return _STAGES[None if workload is None else workload.transition]


def _check_no_regression(existing: InstanceRecord, new: InstanceRecord) -> None:
    """The record never goes back (see `RegressionRefused`)."""
    if new.binding_version < existing.binding_version:
        raise RegressionRefused(
            "no regression: a v1 registration cannot replace a record registered over a "
            "registry challenge (v2)"
        )
    if not existing.verdict.skipped and new.verdict.skipped:
        raise RegressionRefused(
            "no regression: an unverified registration (SKIP_TDX_AUTH) cannot replace a "
            "verified record"
        )
    old_log = _stored_log(existing)
    new_log = None if new.event_log is None else EventLog.from_json(new.event_log)
    if _stage(new_log) < _stage(old_log):
        shown = "expose" if _stage(old_log) == _STAGES["expose"] else "configure"
        raise RegressionRefused(
            f"no regression: the record shows the workload's {shown}; a registration whose "
            "event log shows less cannot replace it (the lifecycle only moves forward)"
        )
    if (
        old_log is not None
        and new_log is not None
        and hmac.compare_digest(old_log.boot.boot_nonce, new_log.boot.boot_nonce)
        and new_log.events[: len(old_log)] != old_log.events
    ):
        raise RegressionRefused(
            "no regression: an event log of the stored boot must extend the stored log "
            "(same events first, in order)"
        )


def merge_registration(existing: InstanceRecord | None, new: InstanceRecord) -> InstanceRecord:
    """The record to store for `new` given the stored one; `RegistrationConflict` if it changes
    anything fixed once set, `RegressionRefused` if it would move the record back. Unset
    identities may be added; the same data again refreshes the quote, the signatures, the
    verdict and the event log, keeping the first registration time; a replaced event log is
    appended to the history (the last `EVENT_LOG_HISTORY_LIMIT`), and so is a replaced verdict
    that concluded differently (`InstanceRecord.with_verdict`)."""
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
    _check_no_regression(existing, new)
    return replace(
        new,
        registered_at=existing.registered_at,
        event_log_history=_event_log_history(existing, new.event_log),
        verdict_history=existing.with_verdict(new.verdict, now=new.updated_at).verdict_history,
    )


def check_logged_identities(log: VerifiedLog, request: RegistrationRequest) -> None:
    """The TD measures each identity into RTMR3 before the quote that registers it: when the
    log has an operator or owner event, its latest one must be the request's identity. A log
    without such events (a v1 identity service) and a request without an identity whose event
    is in the log (a registration the registry refused earlier leaves its event) pass."""
    roles: tuple[tuple[IdentityRole, IdentityInfo | None], ...] = (
        ("operator", request.operator),
        ("owner", request.owner),
    )
    for role, identity in roles:
        logged = log.identity(role)
        if logged is None or identity is None:
            continue
        if not hmac.compare_digest(logged, identity.pubkey):
            raise IdentityEventMismatch(
                f"the event log's latest {role} event names {logged.hex()[:16]}..., not the "
                f"request's {role} {identity.pubkey.hex()[:16]}..."
            )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def policy_needs_event_log(policy: MeasurementPolicy) -> bool:
    """True if the policy pins anything: then a registration without a log proves nothing."""
    return (
        policy.executables is not None
        or policy.allowed_images is not None
        or policy.allowed_image_ids is not None
    )


class Registrar:
    """Runs the checks of POST /register and stores the accepted record. An event log is
    required unless `allow_missing_event_log` is set and `measurement_policy` pins nothing; a
    v1 registration (and a v1 identity signature in a v2 one) only with `accept_v1`."""

    def __init__(
        self,
        verifier: QuoteVerifier,
        store: RecordStore,
        challenges: Challenges,
        *,
        measurement_policy: MeasurementPolicy | None = None,
        allow_missing_event_log: bool = False,
        accept_v1: bool = False,
        clock: Callable[[], datetime] = _utc_now,
        ccel_policy: CcelPolicy | None = None,
    ) -> None:
        self._verifier = verifier
        self._store = store
        self._challenges = challenges
        self._accept_v1 = accept_v1
        self._measurement_policy = (
            MeasurementPolicy() if measurement_policy is None else measurement_policy
        )
        self._event_log_required = not allow_missing_event_log or policy_needs_event_log(
            self._measurement_policy
        )
        self._clock = clock
        self._ccel_policy = CcelPolicy() if ccel_policy is None else ccel_policy

    @property
    def event_log_required(self) -> bool:
        """Whether a registration without an event log is refused."""
        return self._event_log_required

    def _verify_identity_v2(self, request: RegistrationRequest, role: Role) -> None:
        """Both v2 signatures of the `role` identity; in compatibility mode a v1 pair is
        accepted instead (an operator or owner who signed before v2), with a warning."""
        identity: IdentityInfo | None = getattr(request, role)
        if identity is None:
            return
        try:
            verify_identity_v2(request.instance_pubkey, role, identity)
        except SignatureError as v2_error:
            if not self._accept_v1:
                raise
            try:
                verify_identity(request.instance_pubkey, identity)
            except SignatureError:
                raise v2_error from None
            log.warning(
                "V1: accepted a v1 identity signature in a v2 registration "
                "(--accept-v1-registrations)",
                extra={"instance": request.instance_pubkey.hex(), "role": role},
            )

    async def _expected_report_data(self, request: RegistrationRequest) -> bytes:
        """Check the version rules, the identities and the proof of possession (`register`
        checked the challenge first); the report_data the quote must carry."""
        if request.challenge is None or request.instance_signature is None:
            if not self._accept_v1:
                raise V1RegistrationRefused(
                    "v1 registration refused: fetch GET /challenge and send a v2 registration "
                    "(challenge, instance_signature, v2 binding and identity signatures)"
                )
            for identity in (request.operator, request.owner):
                if identity is not None:
                    verify_identity(request.instance_pubkey, identity)
            return report_data_for(
                request.instance_pubkey, request.ppid, request.operator, request.owner
            )
        self._verify_identity_v2(request, "operator")
        self._verify_identity_v2(request, "owner")
        expected = report_data_for_v2(
            request.instance_pubkey,
            request.ppid,
            request.challenge,
            request.operator,
            request.owner,
        )
        try:
            verify_possession(
                request.instance_pubkey, request.challenge, expected, request.instance_signature
            )
        except SignatureError:
            raise PossessionRefused(
                "proof of possession failed: instance_signature is not the instance key's "
                "signature over this challenge and report_data"
            ) from None
        return expected

    async def register(self, request: RegistrationRequest) -> InstanceRecord:
        """Verify `request` and store it; raise a library or `RegistrationError` on refusal.
        A v2 request's challenge is consumed whatever the outcome (see the module's doc)."""
        if request.challenge is None:
            return await self._register(request, None)
        opened_at = await self._challenges.check(request.challenge)
        try:
            # Consumed as of its check: a registration that arrived in time is not refused for
            # the time its verification took.
            return await self._register(request, Consume(request.challenge, opened_at))
        except ChallengeNotConsumed:
            raise ChallengeRefused(CHALLENGE_REFUSED) from None
        except BaseException:
            with contextlib.suppress(ChallengeRefused, StoreError):
                await self._challenges.consume(request.challenge)
            raise

    async def _register(
        self, request: RegistrationRequest, consume: Consume | None
    ) -> InstanceRecord:
        expected = await self._expected_report_data(request)
        if request.event_log is None and self._event_log_required:
            raise EventLogRequired(
                "event log required: every registration carries the RTMR3 event log that "
                "explains its quote"
            )
        checked = await self._verifier.check(request.attestation_quote, now=self._clock())
        if not hmac.compare_digest(checked.report_data, expected):
            raise BindingError(
                "the quote's report_data does not commit to this request "
                "(instance key, PPID, challenge, operator and owner)"
            )
        if not hmac.compare_digest(checked.ppid, request.ppid):
            raise BindingError("the quote's PPID does not match the request's ppid")
        verified: VerifiedLog | None = None
        if request.event_log is not None:
            verified = verify_log(request.event_log, checked.rtmr3)
            check_log(verified, self._measurement_policy)
            check_logged_identities(verified, request)
        ccel = check_ccel(request.ccel, checked.rtmrs, self._ccel_policy)
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
            workload=None if verified is None else verified.workload,
            ssh_host_key=None if verified is None else verified.ssh_host_key,
            event_log=None if request.event_log is None else request.event_log.to_json(),
            binding_version=request.binding_version,
            challenge=request.challenge,
            proof_of_possession=request.instance_signature,
            ccel=None if ccel is None else ccel.log,
            ccel_summary=None if ccel is None else ccel.summary,
        )
        return await self._store.register(
            request.instance_pubkey,
            lambda existing: merge_registration(existing, new),
            consume=consume,
        )
