"""Verification of a registry record and of a fresh challenge answer, with the caller's own
trust root, PCCS and policy: the registry's word is never taken for anything.

Each check is numbered as the README lists it and refuses with a named `VerificationFailed`.
A verified result is a `VerifiedFacts`, which only these functions make."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from tdx_measure import (
    EventLog,
    ExecutableEvent,
    IdentityRole,
    MeasurementError,
    VerifiedLog,
    WorkloadEvent,
    verify_log,
)
from tdx_report_data import (
    IdentityInfo,
    ReportDataError,
    Role,
    SignatureError,
    challenge_report_data,
    report_data_for,
    report_data_for_v2,
    verify_identity,
    verify_identity_v2,
    verify_possession,
)
from tdx_verify import (
    CollateralCache,
    PccsClient,
    PccsError,
    Policy,
    TdxVerifyError,
    VerificationError,
    VerifiedQuote,
    Verifier,
)
from tdxctl._clients import AttestationAnswer, RegistryRecord
from tdxctl._errors import (
    BindingMismatch,
    EventLogRejected,
    ExpectationFailed,
    HostKeyMismatch,
    IdentityRejected,
    QuoteRejected,
    RecordFormatError,
    RegistryRefusedRecord,
)

__all__ = [
    "INTEL_PCS_URL",
    "QuoteVerifier",
    "TrustSettings",
    "VerifiedFacts",
    "check_registry_verdict",
    "verify_attestation",
    "verify_record",
]

INTEL_PCS_URL: Final = "https://api.trustedservices.intel.com"
_FACTS_TOKEN: Final = object()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TrustSettings:
    """What the caller trusts: the root CA (None: Intel's SGX Root CA, built into tdx-verify),
    where collateral comes from, and the policy a verified quote must satisfy."""

    root_ca_pem: bytes | None = None
    pccs_url: str = INTEL_PCS_URL
    policy: Policy = field(default_factory=Policy)


class QuoteVerifier:
    """Full DCAP verification under `TrustSettings`: collateral from the caller's PCCS, chains
    to the caller's root, the caller's policy. Use as `async with`."""

    def __init__(
        self, trust: TrustSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = PccsClient(trust.pccs_url, transport=transport)
        self._cache = CollateralCache(
            self._client, Verifier(root_ca_pem=trust.root_ca_pem, policy=trust.policy)
        )

    async def __aenter__(self) -> QuoteVerifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, quote: bytes, *, now: datetime) -> VerifiedQuote:
        """The quote, verified; `QuoteRejected` naming tdx-verify's refusing step otherwise."""
        try:
            return await self._cache.verify_quote(quote, now=now)
        except VerificationError as exc:
            raise QuoteRejected(
                f"the quote does not verify at step {exc.step}: {exc.reason}", step=exc.step
            ) from None
        except PccsError as exc:
            raise QuoteRejected(
                f"collateral could not be fetched from the PCCS: {exc}", step="collateral"
            ) from None
        except TdxVerifyError as exc:
            raise QuoteRejected(f"the quote does not verify: {exc}", step="quote") from None
        except ValueError as exc:
            raise QuoteRejected(f"the quote does not verify: {exc}", step="quote") from None


@dataclass(frozen=True)
class VerifiedFacts:
    """What a verified quote and its replayed RTMR3 log say about an instance. Only
    `verify_record` and `verify_attestation` make one (constructing it directly raises
    `TypeError`). `operator`/`owner` are public keys; `helpers` the measured helper programs;
    `workload_events` every workload transition in log order; `nonce` set for an attestation."""

    instance_pubkey: bytes
    ppid: bytes
    tcb_status: str
    advisory_ids: tuple[str, ...]
    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    operator: bytes | None
    owner: bytes | None
    helpers: tuple[ExecutableEvent, ...]
    workload_events: tuple[WorkloadEvent, ...]
    ssh_host_key: str | None
    verified_at: datetime
    nonce: bytes | None
    _token: InitVar[object] = None

    def __post_init__(self, _token: object) -> None:
        if _token is not _FACTS_TOKEN:
            raise TypeError(
                "VerifiedFacts cannot be constructed directly: verify_record or "
                "verify_attestation returns it"
            )

    def to_object(self) -> dict[str, Any]:
        """The facts as JSON values (hex for bytes), as `tdxctl --json` prints them."""
        return {
            "instance_pubkey": self.instance_pubkey.hex(),
            "ppid": self.ppid.hex(),
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "mr_td": self.mr_td.hex(),
            "rtmr0": self.rtmr0.hex(),
            "rtmr1": self.rtmr1.hex(),
            "rtmr2": self.rtmr2.hex(),
            "rtmr3": self.rtmr3.hex(),
            "operator": None if self.operator is None else self.operator.hex(),
            "owner": None if self.owner is None else self.owner.hex(),
            "helpers": [
                {
                    "role": h.role,
                    "path": h.path,
                    "sha384": h.sha384.hex(),
                    "build_id": None if h.build_id is None else h.build_id.hex(),
                }
                for h in self.helpers
            ],
            "workload_events": [event.to_object() for event in self.workload_events],
            "ssh_host_key": self.ssh_host_key,
            "verified_at": self.verified_at.isoformat(),
            **({} if self.nonce is None else {"nonce": self.nonce.hex()}),
        }


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _replay(event_log: str, verified: VerifiedQuote) -> VerifiedLog:
    """Parse the log strictly and replay it to the verified quote's RTMR3."""
    try:
        return verify_log(EventLog.from_json(event_log), verified.quote.body.rtmr3)
    except MeasurementError as exc:
        raise EventLogRejected(f"the RTMR3 event log does not verify: {exc}") from None
    except ValueError as exc:
        raise EventLogRejected(f"the RTMR3 event log is malformed: {exc}") from None


def _facts(
    verified: VerifiedQuote,
    log: VerifiedLog,
    *,
    instance_pubkey: bytes,
    operator: bytes | None,
    owner: bytes | None,
    nonce: bytes | None,
) -> VerifiedFacts:
    body = verified.quote.body
    return VerifiedFacts(
        instance_pubkey=instance_pubkey,
        ppid=verified.ppid.value,
        tcb_status=verified.tcb_status,
        advisory_ids=tuple(verified.advisory_ids),
        mr_td=verified.mr_td,
        rtmr0=body.rtmr0,
        rtmr1=body.rtmr1,
        rtmr2=body.rtmr2,
        rtmr3=body.rtmr3,
        operator=operator,
        owner=owner,
        helpers=tuple(e for e in log.events if isinstance(e, ExecutableEvent)),
        workload_events=tuple(e for e in log.events if isinstance(e, WorkloadEvent)),
        ssh_host_key=log.ssh_host_key,
        verified_at=verified.verified_at,
        nonce=nonce,
        _token=_FACTS_TOKEN,
    )


def _check_expected(role: str, actual: bytes | None, expected: bytes | None) -> None:
    if expected is None:
        return
    if actual is None:
        raise ExpectationFailed(f"the record has no {role}; expected {expected.hex()}")
    if not _same(actual, expected):
        raise ExpectationFailed(
            f"the record's {role} is {actual.hex()}, not the expected {expected.hex()}"
        )


def _check_identity(
    instance_pubkey: bytes, role: Role, identity: IdentityInfo, *, v2: bool, accept_v1: bool
) -> None:
    """Both signatures of `identity`: v2 in its `role` for a v2 record (v1 as a fallback only
    with `accept_v1`, as a registry in compatibility mode takes them), v1 for a v1 record."""
    try:
        if not v2:
            verify_identity(instance_pubkey, identity)
            return
        try:
            verify_identity_v2(instance_pubkey, role, identity)
        except SignatureError:
            if not accept_v1:
                raise
            verify_identity(instance_pubkey, identity)
    except SignatureError as exc:
        raise IdentityRejected(f"the record's {role} signatures do not verify: {exc}") from None


def _check_binding(record: RegistryRecord, instance_pubkey: bytes, report_data: bytes) -> None:
    """The quote's report_data is the registration binding of the whole record (v2: over the
    record's challenge) and, for v2, the proof of possession verifies over both."""
    challenge, proof = record.challenge, record.proof_of_possession
    v2 = record.binding_version == 2
    if v2 and (challenge is None or proof is None):
        raise RecordFormatError("a binding_version 2 record lacks its challenge or proof")
    try:
        if challenge is None or not v2:
            expected = report_data_for(instance_pubkey, record.ppid, record.operator, record.owner)
        else:
            expected = report_data_for_v2(
                instance_pubkey, record.ppid, challenge, record.operator, record.owner
            )
    except ReportDataError as exc:
        raise RecordFormatError(f"the record cannot be encoded: {exc}") from None
    if not _same(report_data, expected):
        raise BindingMismatch(
            "the quote's report_data is not the binding of this record (instance key, PPID, "
            + ("the registry's challenge, " if v2 else "")
            + "operator and owner with their signatures)"
        )
    if not v2 or challenge is None or proof is None:
        return
    try:
        verify_possession(instance_pubkey, challenge, expected, proof)
    except SignatureError as exc:
        raise BindingMismatch(f"the record's proof of possession does not verify: {exc}") from None


async def verify_record(
    record: RegistryRecord,
    *,
    instance_pubkey: bytes,
    verifier: QuoteVerifier,
    expect_operator: bytes | None = None,
    expect_owner: bytes | None = None,
    accept_v1: bool = False,
    clock: Callable[[], datetime] = _utc_now,
) -> VerifiedFacts:
    """Check everything the registry checked, independently, and what the registry only
    relays: (1) the record is `instance_pubkey`'s and a v2 registration (v1 only with
    `accept_v1`); (2) an owner only with an operator, and both signatures of each identity
    in its role; (3) full DCAP of the quote under the caller's trust; (4) report_data is the
    registration binding of the whole record, over its challenge, and the instance key's proof
    of possession verifies; (5) the quote's PPID is the record's; (6) the event log replays to
    the quote's RTMR3; (7) its latest operator and owner events name exactly the record's
    identities; (8) the registry's `ssh_host_key`, when given, is the verified log's; (9) the
    caller's expected operator and owner."""
    # (1) The registry could answer with another instance's record, or a replayable v1 one.
    if not _same(record.instance_pubkey, instance_pubkey):
        raise BindingMismatch("the registry answered with the record of another instance")
    v2 = record.binding_version == 2
    if not v2 and not accept_v1:
        raise BindingMismatch(
            "the record is a v1 registration (no registry challenge, no proof of possession: "
            "it could be a replay); refused unless --accept-v1"
        )
    # (2) Identities: the rule and both signatures of each, in its role.
    if record.owner is not None and record.operator is None:
        raise IdentityRejected("the record has an owner but no operator")
    roles: tuple[tuple[Role, IdentityInfo | None], ...] = (
        ("operator", record.operator),
        ("owner", record.owner),
    )
    for role, identity in roles:
        if identity is not None:
            _check_identity(instance_pubkey, role, identity, v2=v2, accept_v1=accept_v1)
    # (3) DCAP, with the caller's root, PCCS and policy.
    verified = await verifier.verify(record.attestation_quote, now=clock())
    # (4) The quote commits to this exact record; the TD held the instance key.
    _check_binding(record, instance_pubkey, verified.report_data)
    # (5) The PPID the record names is the quoting platform's.
    if not _same(verified.ppid.value, record.ppid):
        raise BindingMismatch("the quote's PPID is not the record's ppid")
    # (6) The log explains the quote's RTMR3.
    if record.event_log is None:
        raise EventLogRejected("the record carries no RTMR3 event log: nothing explains RTMR3")
    log = _replay(record.event_log, verified)
    # (7) The TD itself says whom it serves.
    _check_log_identity(log, "operator", _pubkey(record.operator))
    _check_log_identity(log, "owner", _pubkey(record.owner))
    # (8) What the registry relays about the SSH host key is what the TD measured.
    if record.ssh_host_key is not None and (
        log.ssh_host_key is None
        or not _same(record.ssh_host_key.encode(), log.ssh_host_key.encode())
    ):
        raise HostKeyMismatch(
            "the registry's ssh_host_key is not the one measured in the verified event log"
        )
    # (9) The caller's own expectations.
    operator = _pubkey(record.operator)
    owner = _pubkey(record.owner)
    _check_expected("operator", operator, expect_operator)
    _check_expected("owner", owner, expect_owner)
    return _facts(
        verified, log, instance_pubkey=instance_pubkey, operator=operator, owner=owner, nonce=None
    )


def check_registry_verdict(record: RegistryRecord, *, accept_refusal: bool = False) -> str | None:
    """The registry's own refusal of `record` (`verification.refused`), after `verify_record`
    passed: `RegistryRefusedRecord` unless `accept_refusal`, then returned for the caller to
    show; None when the registry did not refuse it. A refusal only ever adds a reason to refuse:
    the registry cannot make a record pass, but a record it stopped vouching for (a re-appraisal
    with current collateral, a stricter policy) is not silently accepted either."""
    refused = record.registry_refused
    if refused is not None and not accept_refusal:
        raise RegistryRefusedRecord(refused)
    return refused


def _pubkey(identity: IdentityInfo | None) -> bytes | None:
    return None if identity is None else identity.pubkey


def _check_log_identity(log: VerifiedLog, role: IdentityRole, pubkey: bytes | None) -> None:
    measured = log.identity(role)
    if pubkey is None and measured is None:
        return
    if pubkey is None:
        raise EventLogRejected(f"the event log names an {role} the record does not have")
    if measured is None:
        raise EventLogRejected(f"the event log does not name the record's {role}")
    if not _same(measured, pubkey):
        raise EventLogRejected(f"the event log's latest {role} is not the record's {role}")


async def verify_attestation(
    answer: AttestationAnswer,
    *,
    instance_pubkey: bytes,
    nonce: bytes,
    verifier: QuoteVerifier,
    expect_ppid: bytes | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> VerifiedFacts:
    """Check a challenge answer: (1) it names `instance_pubkey` and `nonce`; (2) full DCAP of
    its quote under the caller's trust; (3) report_data is the challenge binding of (instance,
    nonce); (4) the quote's PPID is `expect_ppid` (a record's, an earlier attestation's), when
    given; (5) the event log replays to the quote's RTMR3. The facts' operator and owner are
    the log's latest identity events."""
    # (1) The answer is for this instance and this challenge.
    if not _same(answer.instance_pubkey, instance_pubkey):
        raise BindingMismatch("the attestation answer names another instance key")
    if not _same(answer.nonce, nonce):
        raise BindingMismatch("the attestation answer is for another nonce")
    # (2) DCAP, with the caller's root, PCCS and policy.
    verified = await verifier.verify(answer.quote, now=clock())
    # (3) The quote was made for this challenge, now.
    try:
        expected = challenge_report_data(instance_pubkey, nonce)
    except ReportDataError as exc:
        raise BindingMismatch(f"the challenge cannot be encoded: {exc}") from None
    if not _same(verified.report_data, expected):
        raise BindingMismatch(
            "the quote's report_data is not the challenge binding of this instance and nonce"
        )
    # (4) The same platform as the record, when there is one.
    if expect_ppid is not None and not _same(verified.ppid.value, expect_ppid):
        raise BindingMismatch("the fresh quote's PPID is not the expected platform's")
    # (5) The log explains the quote's RTMR3.
    log = _replay(answer.event_log, verified)
    return _facts(
        verified,
        log,
        instance_pubkey=instance_pubkey,
        operator=log.identity("operator"),
        owner=log.identity("owner"),
        nonce=nonce,
    )
