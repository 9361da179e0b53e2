"""The identity service's operations, free of HTTP: registration and the workload steps.

Every state change runs under one asyncio.Lock, asks `lifecycle.next_state` first, and is
committed to the state file only after everything else (registry, workload runtime) succeeded.

Measured runtime. Every quote is taken while the RTMR3 event log is frozen, and every
registration sends that log, so the registry can replay it to the quote's RTMR3.

Nothing opens before the registry accepted it. Configure starts the new container (for its
image ID) with SSH setup access closed, extends the `configure` event and re-registers; only on
the registry's acceptance is the state committed and SSH opened. On a refusal (or an unreachable
registry) the new container is removed, SSH stays closed and the state is unchanged. Expose
closes SSH first (closing is always safe), extends `expose` and re-registers; only on
acceptance is the state committed and the port published. On a refusal the port stays
unpublished and SSH stays closed for good: a TD never reopens what a step began closing (the
workload section stays "exposing"; the owner may send the expose again). An extension cannot
be taken back: a refused step leaves its event, and verifiers take the latest.

Replay. Every signed owner body carries a seq that must be greater than the last one accepted
(`PersistedState.last_seq`); the check runs under the lock before anything else of the step,
and the step's seq is committed in the same state write as the step. A stale body changes
nothing. With `accept_unsequenced` a v1 body without seq is served, with a warning each time.

Challenges. `attest_challenge` answers a verifier's nonce with a fresh quote over the challenge
binding, taken while the event log is frozen, and that log: the log replays to its RTMR3.

Settings, SSH host key, TLS key and identities in the evidence. `prepare` measures the
effective settings (`config` event) and then the SSH host key made in memory for this start
(`ssh_host_key` event) right after the log starts, before anything can open the SSH setup
server; then the attested front's TLS key (`tls_key` event), and only after that takes the
quote its certificate carries. Each registration extends an `identity` event with its public
key before the quote it sends is taken; a refused registration leaves its event (an extension
cannot be undone; verifiers take the latest event per role). After agreement with the registry
(below), the log's latest identity per role is made equal to the state's: after a reboot the
new log names them again.

The registry comparison. The host can rewrite the state file, so no lifecycle step (operator and
owner registration, configure, expose) is served, and the workload is not recovered, until the
state's operator, owner and lifecycle agree with the registry's record and this boot's event
log (`core.comparison`): compared at start, then with back-off in a background task until they
agree. Until then every step raises `ComparisonPending` or `IdentityDisagreement` (503); GET
routes keep serving. Whenever the record, the event log or the state shows that an expose
began, SSH setup access is closed for good before anything else, whatever the state file says.

The locked workload. With a key broker, recovery needs the store key the broker releases. When
the broker is down or refuses (`WorkloadLocked`), the workload stays stopped and locked: the
service still serves (registration, GET routes), `GET /instance/state` shows `"locked"` and
why, configure and expose answer 503, and a background task asks again with back-off (1 s
doubling to 30 s by default, with jitter), logging each failure; once the key is released it
recovers, measures and re-registers the committed workload by itself. Shutdown cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdx_ppid
import tdx_quote
from tdx_identity.core.comparison import (
    Backoff,
    Comparison,
    ComparisonStatus,
    closed_for_good,
    disagreement,
    lifecycle_disagreement,
)
from tdx_identity.core.instance_key import public_key_bytes
from tdx_identity.core.lifecycle import (
    Action,
    Lifecycle,
    WorkloadPhase,
    has_workload,
    next_state,
    require_owner,
)
from tdx_identity.core.measurement import MeasurementLog
from tdx_identity.core.ports import (
    BootLogSource,
    CommittedWorkload,
    QuoteSource,
    RegistrationRequest,
    RegistryClient,
    TlsCertificateMaker,
    WorkloadManager,
)
from tdx_identity.core.state import PersistedState, StateStore
from tdx_identity.exceptions import (
    ComparisonPending,
    FrontError,
    IdentitiesUnconfirmed,
    IdentityDisagreement,
    MeasurementPersistError,
    OwnerTokenInvalid,
    PlatformError,
    QuoteSourceError,
    RegistryError,
    RegistryRecordMalformed,
    RegistryUnavailable,
    RtmrDeviceError,
    StaleRequest,
    StartupError,
    StateWriteError,
    StepOutOfOrder,
    WorkloadAuthError,
    WorkloadError,
    WorkloadFailed,
    WorkloadLocked,
)
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.requests import parse_configure, parse_expose, verify_owner_signature
from tdx_measure import (
    CcelError,
    ConfigEvent,
    IdentityEvent,
    IdentityRole,
    SshHostKeyEvent,
    TlsKeyEvent,
    Transition,
    WorkloadEvent,
    parse_ccel,
    replay_ccel,
)
from tdx_report_data import (
    IdentityInfo,
    Role,
    SignatureError,
    challenge_report_data,
    prove_possession,
    report_data_for_v2,
    sign_identity,
    sign_identity_v2,
)

__all__ = [
    "MAX_TOKEN_CHARS",
    "ChallengeAnswer",
    "IdentityService",
    "jittered",
    "platform_ppid",
    "token_hash",
]

log = logging.getLogger("tdx_identity")

MAX_TOKEN_CHARS = 512
_CLOSED_FOR_GOOD = (
    "an expose began: SSH setup access is closed for good and the workload cannot be "
    "configured again; send the expose again"
)


_RANDOM = secrets.SystemRandom()


def jittered(delay: float) -> float:
    """`delay` scaled by a random factor in [0.75, 1.25], so that many TDs locked by the same
    broker outage do not all ask it again at the same instant."""
    return delay * _RANDOM.uniform(0.75, 1.25)


def platform_ppid(quote: bytes) -> bytes:
    """The PPID carried by a quote of this platform (cleartext, encrypted, or from the PCK cert)."""
    return tdx_ppid.quote_ppid(tdx_quote.parse_quote(quote, allow_zero_padding=True)).value


def token_hash(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: what the state keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


@dataclass(frozen=True)
class ChallengeAnswer:
    """A fresh quote over the challenge binding of (instance key, nonce), and the RTMR3 event
    log that explains the quote's RTMR3."""

    nonce: bytes
    quote: bytes
    event_log: str


def _ccel_explaining(ccel: bytes | None, quote: bytes) -> bytes | None:
    """`ccel` when it parses and replays to `quote`'s RTMR0-2 (and RTMR3 when it extends it);
    else None, with a warning. The registry refuses a registration whose boot log does not
    explain its quote (something extended RTMR0-2 after the firmware, or the log is not this
    boot's): without it the registration stands unless the registry pins the kernel or the
    command line, which then refuses it as it would any registration without a log."""
    if ccel is None:
        return None
    try:
        body = tdx_quote.parse_quote(quote, allow_zero_padding=True).body
        replay = replay_ccel(parse_ccel(ccel), (body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3))
    except (CcelError, ValueError) as exc:
        log.warning(
            "the CCEL boot log does not parse: registering without it",
            extra={"reason": str(exc)[:300]},
        )
        return None
    if not replay.ok:
        log.warning(
            "the CCEL boot log does not replay to this TD's quote: registering without it",
            extra={"mismatched_rtmrs": list(replay.mismatched)},
        )
        return None
    return ccel


class IdentityService:
    """The instance's identity: its key, its persisted lifecycle, and the steps that move it."""

    def __init__(
        self,
        *,
        instance_key: Ed25519PrivateKey,
        store: StateStore,
        quote_source: QuoteSource,
        registry: RegistryClient,
        workload: WorkloadManager,
        measurement: MeasurementLog,
        ssh_host_key: str,
        settings_event: ConfigEvent,
        registry_backoff: Backoff | None = None,
        key_broker_backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ppid_of_quote: Callable[[bytes], bytes] = platform_ppid,
        clock: Callable[[], float] = time.time,
        accept_unsequenced: bool = False,
        accept_v1_signatures: bool = False,
        tls: TlsCertificateMaker | None = None,
        boot_log: BootLogSource | None = None,
    ) -> None:
        self._key = instance_key
        self._tls = tls
        self._boot_log = boot_log
        self._pubkey = public_key_bytes(instance_key)
        self._store = store
        self._quotes = quote_source
        self._registry = registry
        self._workload = workload
        self._measurement = measurement
        self._ppid_of_quote = ppid_of_quote
        self._clock = clock
        self._accept_unsequenced = accept_unsequenced
        self._accept_v1_signatures = accept_v1_signatures
        if accept_v1_signatures:
            log.warning(
                "accepting v1 operator and owner signatures (--accept-v1-signatures): a v1 "
                "signature covers only the raw instance key, so it also passes for another role"
            )
        self._ssh_host_key = ssh_host_key
        self._settings_event = settings_event
        self._closed_for_good = False
        # What the registry's record accepted the workload to run, once a comparison agreed.
        self._accepted_image_id: str | None = None
        self._backoff = registry_backoff or Backoff()
        self._lock = asyncio.Lock()
        self._prepared = False
        self._comparison = Comparison(
            ComparisonStatus.PENDING, "the registry has not been reached yet: not compared yet"
        )
        self._retry_delay = self._backoff.initial
        self._comparing: asyncio.Task[None] | None = None
        self._key_backoff = key_broker_backoff or Backoff(1.0, 30.0)
        self._sleep = sleep
        self._locked: str | None = None
        self._unlocking: asyncio.Task[None] | None = None
        self._confirmed_owner: bytes | None = None

    @property
    def instance_pubkey(self) -> bytes:
        return self._pubkey

    @property
    def state(self) -> PersistedState:
        return self._store.current

    @property
    def comparison(self) -> Comparison:
        """Where the comparison of the state's identities with the registry's record stands."""
        return self._comparison

    @property
    def confirmed_owner(self) -> bytes | None:
        """The owner's public key as the registry confirmed it: the state's owner once the
        comparison with the registry's record agreed, or the owner the registry accepted at
        owner registration; None before (and with no owner). The store key a key broker
        releases must be sealed by this key (`workload.key_broker`)."""
        return self._confirmed_owner

    @property
    def workload_locked(self) -> str | None:
        """Why the committed workload stays stopped and locked (the key broker has not
        released the store key), None when it is not locked."""
        return self._locked

    def event_log_json(self) -> str:
        """The RTMR3 event log as far as it is extended: what `GET /instance/eventlog` serves."""
        return self._measurement.event_log_json()

    async def ensure_ppid(self) -> None:
        """Learn the PPID from the platform's own quote (zero report_data) once, and keep it."""
        if self._store.current.ppid is not None:
            return
        try:
            quote = await self._quotes.get_quote(bytes(64))
        except QuoteSourceError as exc:
            raise PlatformError(
                f"cannot get this platform's quote to learn its PPID: {exc}"
            ) from exc
        try:
            ppid = self._ppid_of_quote(quote)
        except ValueError as exc:
            raise PlatformError(f"the platform's quote carries no usable PPID: {exc}") from exc
        try:
            self._store.commit(replace(self._store.current, ppid=ppid))
        except StateWriteError as exc:
            raise StartupError(str(exc)) from exc
        log.info("platform PPID recorded", extra={"ppid": ppid.hex()})

    async def prepare(self) -> None:
        """Before serving: make sure the PPID is known, start the RTMR3 log (a boot event
        and the helpers after a reboot, else continue the persisted log when it replays
        exactly to RTMR3), then measure this start's settings and SSH host key, before anything
        can open the SSH setup server. Runs once; the
        program calls it before its server starts so that a failure is one log line."""
        if self._prepared:
            return
        if self._accept_unsequenced:
            log.warning(
                "accepting unsequenced owner requests (--accept-unsequenced-requests): a v1 "
                "body without seq can be replayed by whoever saw it"
            )
        await self.ensure_ppid()
        try:
            await self._measurement.start(int(self._clock()))
        except (RtmrDeviceError, MeasurementPersistError) as exc:
            raise StartupError(f"cannot start the RTMR3 measurement log: {exc}") from exc
        try:
            await self._measurement.record(self._settings_event)
        except (RtmrDeviceError, MeasurementPersistError) as exc:
            raise StartupError(f"cannot measure the settings: {exc}") from exc
        log.info("settings measured", extra={"settings": dict(self._settings_event.settings)})
        try:
            await self._measurement.record(SshHostKeyEvent(public_key=self._ssh_host_key))
        except (RtmrDeviceError, MeasurementPersistError) as exc:
            raise StartupError(f"cannot measure the SSH host key: {exc}") from exc
        log.info(
            "SSH host key made in memory and measured", extra={"public_key": self._ssh_host_key}
        )
        await self._certify_tls_key()
        self._prepared = True

    async def _certify_tls_key(self) -> None:
        """The attested front's TLS key of this start: its SPKI measured (``tls_key`` event)
        first, then a quote over the claims binding it and the instance key is taken, and the
        certificate carrying that quote is made. A quote taken before the event would not
        show the key in its RTMR3."""
        tls = self._tls
        if tls is None:
            return
        event = TlsKeyEvent.of_spki(tls.spki_der)
        try:
            await self._measurement.record(event)
        except (RtmrDeviceError, MeasurementPersistError) as exc:
            raise StartupError(f"cannot measure the TLS key: {exc}") from exc
        try:
            quote = await self._quote_for(tls.report_data())
        except QuoteSourceError as exc:
            raise StartupError(f"cannot get the TLS certificate's quote: {exc}") from exc
        try:
            tls.install_certificate(quote)
        except FrontError as exc:
            raise StartupError(str(exc)) from exc
        log.info(
            "TLS key made in memory, measured and certified",
            extra={"tls_spki_sha256": event.spki_sha256.hex()},
        )

    async def start(self) -> None:
        """At server start: `prepare`, then compare the state's identities with the registry's
        record. On agreement: measure the identities, let the workload runtime recover and
        measure what it runs, and re-register once so the registry gets this boot's log.
        Otherwise a background task compares again with back-off and does all that once they
        agree; until then lifecycle steps answer 503."""
        await self.prepare()
        if await self._compare():
            await self._serve_agreed()
            return
        self._comparing = asyncio.create_task(self._compare_until_agreed())

    async def _compare(self) -> bool:
        """One comparison with the registry's record; True on agreement. Logs the outcome.
        This boot's log and the state close SSH for good before the registry is asked."""
        if closed_for_good(self._store.current, None, self._logged_transition()):
            await self._close_for_good()
        agreed_owner: bytes | None = None
        try:
            record = await self._registry.lookup(self._pubkey)
        except RegistryUnavailable as exc:
            self._comparison = Comparison(
                ComparisonStatus.PENDING, f"the registry has not been reached yet: {exc}"
            )
            log.warning(
                "cannot compare the identities with the registry; owner steps wait",
                extra={"reason": str(exc), "retry_in": self._retry_delay},
            )
            return False
        except RegistryRecordMalformed as exc:
            reason: str | None = str(exc)
        else:
            state, logged = self._store.current, self._logged_transition()
            if closed_for_good(state, record, logged):
                await self._close_for_good()
            reason = disagreement(
                self._pubkey, state, record, accept_v1=self._accept_v1_signatures
            ) or lifecycle_disagreement(state, record, logged)
            self._accepted_image_id = None if record is None else record.workload_image_id
            agreed_owner = None if state.owner is None else state.owner.pubkey
        if reason is not None:
            self._comparison = Comparison(
                ComparisonStatus.DISAGREED, f"the registry's record disagrees: {reason}"
            )
            log.error(
                "the state disagrees with the registry's record or the event log: refusing "
                "every lifecycle step and not recovering the workload until they agree",
                extra={"reason": reason, "retry_in": self._retry_delay},
            )
            return False
        self._confirmed_owner = agreed_owner
        log.info("the state's identities and lifecycle agree with the registry's record")
        return True

    async def _close_for_good(self) -> None:
        """An expose began: SSH setup access closes now and no configure is served again."""
        self._closed_for_good = True
        await self._workload.close_setup_access_for_good()

    def _logged_transition(self) -> Transition | None:
        """The latest workload transition of this boot's event log (it replays to RTMR3)."""
        latest = self._measurement.log.workload
        return None if latest is None else latest.transition

    async def _compare_until_agreed(self) -> None:
        """Compare again with back-off until agreement, then serve; cancelled at shutdown."""
        while True:
            await asyncio.sleep(self._retry_delay)
            self._retry_delay = self._backoff.after(self._retry_delay)
            if not await self._compare():
                continue
            try:
                await self._serve_agreed()
            except StartupError as exc:
                self._comparison = Comparison(
                    ComparisonStatus.PENDING,
                    f"the identities agree, but the workload could not be recovered: {exc}",
                )
                log.error(
                    "workload recovery after agreement failed; trying again",
                    extra={"reason": str(exc), "retry_in": self._retry_delay},
                )
                continue
            return

    async def _serve_agreed(self) -> None:
        """After agreement: measure the state's identities, recover and measure the workload,
        re-register, and only then serve lifecycle steps."""
        async with self._lock:
            self._comparison = Comparison(
                ComparisonStatus.PENDING,
                "the identities agree with the registry; the workload is being recovered",
            )
            try:
                await self._measure_identities()
            except (RtmrDeviceError, MeasurementPersistError) as exc:
                raise StartupError(f"cannot measure the identities: {exc}") from exc
            locked = False
            try:
                await self._recover_workload()
            except WorkloadLocked as exc:
                self._lock_workload(str(exc))
                locked = True
            if not locked:
                try:
                    await self._measure_recovered_workload()
                except (RtmrDeviceError, MeasurementPersistError, WorkloadError) as exc:
                    raise StartupError(f"cannot measure the recovered workload: {exc}") from exc
                # While locked, this boot's log shows no workload yet: the registry would take
                # it for a regression. The re-registration follows the recovery.
                await self._reregister_at_start()
            self._comparison = Comparison(ComparisonStatus.AGREED)
            if locked and self._unlocking is None:
                self._unlocking = asyncio.create_task(self._unlock_until_released())

    def _lock_workload(self, reason: str) -> None:
        self._locked = reason
        log.error(
            "the store key is not released: the workload stays stopped and locked; asking "
            "the key broker again with back-off",
            extra={"reason": reason, "retry_in": self._key_backoff.initial},
        )

    async def _unlock_until_released(self) -> None:
        """Ask for the store key again with back-off until the committed workload recovers;
        then measure it and re-register. Cancelled at shutdown."""
        delay = self._key_backoff.initial
        while True:
            await self._sleep(jittered(delay))
            delay = self._key_backoff.after(delay)
            async with self._lock:
                try:
                    await self._recover_workload()
                except WorkloadLocked as exc:
                    self._locked = str(exc)
                    log.warning(
                        "the store key is still not released; the workload stays locked",
                        extra={"reason": str(exc), "retry_in": delay},
                    )
                    continue
                except StartupError as exc:
                    self._locked = f"the workload could not be recovered: {exc}"
                    log.error(
                        "the locked workload could not be recovered; trying again",
                        extra={"reason": str(exc), "retry_in": delay},
                    )
                    continue
                try:
                    await self._measure_recovered_workload()
                except (RtmrDeviceError, MeasurementPersistError, WorkloadError) as exc:
                    # Steps stay refused until what runs is measured; the next recovery keeps
                    # the running container and measures it.
                    self._locked = f"the recovered workload could not be measured: {exc}"
                    log.error(
                        "cannot measure the recovered workload; trying again",
                        extra={"reason": str(exc), "retry_in": delay},
                    )
                    continue
                self._locked = None
                log.info("the key broker released the store key: the workload is recovered")
                await self._reregister_at_start()
            return

    def _require_unlocked(self) -> None:
        """Refuse a workload step (503) while the store key is not released."""
        locked = self._locked
        if locked is not None:
            raise WorkloadLocked(locked)

    def _require_agreement(self) -> None:
        """Refuse a lifecycle step (503) until the comparison with the registry agreed."""
        comparison = self._comparison
        if comparison.status is ComparisonStatus.AGREED:
            return
        reason = comparison.reason or "the comparison with the registry has not completed"
        error: type[IdentitiesUnconfirmed] = (
            IdentityDisagreement
            if comparison.status is ComparisonStatus.DISAGREED
            else ComparisonPending
        )
        raise error(reason, retry_after=self._retry_delay)

    async def _measure_identities(self) -> None:
        """Make the log's latest identity per role equal the state's (after a reboot the new
        log has none): record each one that is missing or different."""
        state = self._store.current
        roles: tuple[tuple[IdentityRole, IdentityInfo | None], ...] = (
            ("operator", state.operator),
            ("owner", state.owner),
        )
        for role, identity in roles:
            if identity is not None:
                await self._measure_identity(role, identity.pubkey)

    async def _measure_identity(self, role: IdentityRole, pubkey: bytes) -> None:
        """Extend an identity event unless the log's latest one for `role` is `pubkey`."""
        latest = self._measurement.log.identity(role)
        if latest is not None and hmac.compare_digest(latest, pubkey):
            return
        await self._measurement.record(IdentityEvent(role=role, pubkey=pubkey))

    async def _recover_workload(self) -> None:
        """Let the workload runtime reach the committed state (an expose that began but was
        never committed is not finished: it was never accepted by the registry)."""
        state = self._store.current
        committed = None
        if state.workload_config is not None and state.owner is not None:
            committed = CommittedWorkload(
                config=state.workload_config,
                owner_pubkey=state.owner.pubkey,
                exposed=state.lifecycle is Lifecycle.EXPOSED,
                accepted_image_id=self._accepted_image_id,
            )
        try:
            await self._workload.recover(committed)
        except WorkloadLocked:
            raise
        except WorkloadError as exc:
            raise StartupError(f"workload recovery failed: {exc}") from exc

    async def _measure_recovered_workload(self) -> None:
        """Make the log's latest workload events describe what recovery runs: after a reboot the
        log holds none; within a boot, a step whose event was never extended, or an image whose
        ID changed, is recorded now. A workload recovery re-ran unchanged adds nothing."""
        state = self._store.current
        config = state.workload_config
        if not has_workload(state.lifecycle) or config is None:
            return
        image_id = self._workload.running_image_id()
        if image_id is None:
            log.warning(
                "the committed workload is not running; nothing to measure",
                extra={"lifecycle": state.lifecycle.value},
            )
            return
        wanted: tuple[Transition, ...] = (
            ("configure", "expose") if state.lifecycle is Lifecycle.EXPOSED else ("configure",)
        )
        recorded = [
            event for event in self._measurement.log.events if isinstance(event, WorkloadEvent)
        ]
        events = [_workload_event(transition, config, image_id) for transition in wanted]
        if recorded[-len(events) :] == events:
            return
        if len(events) == 2 and recorded[-1:] == events[:1]:
            events = events[1:]
        for event in events:
            await self._record_workload(event.transition, config, image_id)
        log.info(
            "recovered workload measured",
            extra={"transitions": [e.transition for e in events], "image_id": image_id},
        )

    async def _reregister_at_start(self) -> None:
        """Send the registry this start's quote and log once; a failure is logged, not fatal
        (the next configure or expose re-registers too)."""
        state = self._store.current
        if state.operator is None:
            return
        try:
            await self._record(state.operator, state.owner)
        except (RegistryError, QuoteSourceError, RtmrDeviceError) as exc:
            log.warning(
                "re-registration at start-up failed; the registry's record may not carry this "
                "boot's event log",
                extra={"reason": str(exc)},
            )
            return
        log.info("re-registered at start-up", extra={"lifecycle": state.lifecycle.value})

    async def stop(self) -> None:
        """At shutdown: stop comparing with the registry, then the workload runtime's listeners
        (the committed state stays)."""
        for task in (self._comparing, self._unlocking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._comparing = self._unlocking = None
        await self._workload.shutdown()

    async def _quote_for(self, report_data: bytes) -> bytes:
        """A quote of this TD carrying exactly `report_data` (QuoteSourceError otherwise)."""
        quote = await self._quotes.get_quote(report_data)
        try:
            parsed = tdx_quote.parse_quote(quote, allow_zero_padding=True)
        except ValueError as exc:
            raise QuoteSourceError(f"the quote source returned a malformed quote: {exc}") from exc
        if not hmac.compare_digest(parsed.body.report_data, report_data):
            raise QuoteSourceError("the quote source returned a quote for other report_data")
        return quote

    async def attest_challenge(self, nonce: bytes) -> ChallengeAnswer:
        """A fresh quote over the challenge binding of (this instance, `nonce`), taken while
        the event log is frozen, with that log. Changes no state; EncodingError for a nonce
        of the wrong size."""
        report_data = challenge_report_data(self._pubkey, nonce)
        async with self._measurement.frozen() as event_log:
            quote = await self._quote_for(report_data)
        return ChallengeAnswer(nonce=nonce, quote=quote, event_log=event_log)

    async def _attest(
        self, challenge: bytes, operator: IdentityInfo | None, owner: IdentityInfo | None
    ) -> tuple[bytes, bytes]:
        """The v2 report_data committing to the instance, PPID, the registry's `challenge` and
        the identities, and a quote of this TD carrying it."""
        report_data = report_data_for_v2(self._pubkey, self._ppid(), challenge, operator, owner)
        return report_data, await self._quote_for(report_data)

    def _ppid(self) -> bytes:
        ppid = self._store.current.ppid
        if ppid is None:
            raise QuoteSourceError("the platform PPID is not known yet")
        return ppid

    async def _record(self, operator: IdentityInfo | None, owner: IdentityInfo | None) -> None:
        """Have the registry accept (instance, PPID, identities) as a v2 registration: over a
        fresh challenge of the registry, with a quote binding it (taken while the event log is
        frozen), the instance key's proof of possession, that log, and the firmware's CCEL
        boot log when the platform has one (the registry replays it to the quote's RTMR0-2)."""
        ccel = None if self._boot_log is None else await self._boot_log.read_ccel()
        challenge = await self._registry.challenge()
        async with self._measurement.frozen() as event_log:
            report_data, quote = await self._attest(challenge, operator, owner)
        ccel = _ccel_explaining(ccel, quote)
        await self._registry.register(
            RegistrationRequest(
                instance_pubkey=self._pubkey,
                ppid=self._ppid(),
                attestation_quote=quote,
                operator=operator,
                owner=owner,
                challenge=challenge,
                proof_of_possession=prove_possession(self._key, challenge, report_data),
                event_log=event_log,
                ccel=ccel,
            )
        )

    async def _record_workload(
        self, transition: Transition, config: WorkloadConfig, image_id: str | None
    ) -> None:
        """Extend RTMR3 with the workload event of a step the runtime has carried out."""
        if image_id is None:
            raise WorkloadFailed("the workload runtime reported no image ID for the container")
        await self._measurement.record_workload(
            transition, config.image, image_id, config.persist_dirs, config.port
        )

    async def _reregister(self) -> None:
        """After a workload step: the same identities, a new quote, the extended log."""
        state = self._store.current
        await self._record(state.operator, state.owner)

    def _counter_sign(self, role: Role, pubkey: bytes, signature: bytes) -> IdentityInfo:
        """The instance's counter-signed identity for `role`, after checking the identity key's
        v2 `signature` (`sign_instance_v2`); a v1 signature over the raw instance key only with
        `accept_v1_signatures`, warned each time. SignatureError otherwise."""
        try:
            return sign_identity_v2(self._key, role, pubkey, signature)
        except SignatureError:
            if not self._accept_v1_signatures:
                raise
        identity = sign_identity(self._key, pubkey, signature)
        log.warning(
            "v1 signature accepted (--accept-v1-signatures)",
            extra={"role": role, "pubkey": pubkey.hex()},
        )
        return identity

    async def register_operator(self, pubkey: bytes, signature: bytes) -> str:
        """Register the operator; return the single-use owner token (only its hash is kept)."""
        self._require_agreement()
        async with self._lock:
            target = next_state(self._store.current.lifecycle, Action.REGISTER_OPERATOR)
            operator = self._counter_sign("operator", pubkey, signature)
            await self._measure_identity("operator", pubkey)
            await self._record(operator, None)
            token = secrets.token_urlsafe(32)
            self._store.commit(
                replace(
                    self._store.current,
                    lifecycle=target,
                    operator=operator,
                    owner_token_sha256=token_hash(token),
                )
            )
        log.info("operator registered", extra={"operator_pubkey": pubkey.hex()})
        return token

    async def register_owner(self, token: str | None, pubkey: bytes, signature: bytes) -> None:
        """Register the owner with the operator's token; the token is spent by this call."""
        self._require_agreement()
        if not token:
            raise OwnerTokenInvalid("missing x-token header")
        async with self._lock:
            state = self._store.current
            target = next_state(state.lifecycle, Action.REGISTER_OWNER)
            expected = state.owner_token_sha256
            if (
                expected is None
                or state.operator is None
                or len(token) > MAX_TOKEN_CHARS
                or not hmac.compare_digest(token_hash(token), expected)
            ):
                raise OwnerTokenInvalid("invalid owner token")
            owner = self._counter_sign("owner", pubkey, signature)
            await self._measure_identity("owner", pubkey)
            await self._record(state.operator, owner)
            await self._workload.on_owner_registered(pubkey)
            self._store.commit(
                replace(self._store.current, lifecycle=target, owner=owner, owner_token_sha256=None)
            )
            self._confirmed_owner = pubkey
        log.info("owner registered", extra={"owner_pubkey": pubkey.hex()})

    def _owner_pubkey(self, action: Action) -> bytes:
        state = self._store.current
        require_owner(state.lifecycle, action)
        if state.owner is None:  # unreachable: PersistedState keeps owner and lifecycle in step
            raise WorkloadAuthError("no owner is registered")
        return state.owner.pubkey

    def _check_seq(self, seq: int | None, action: str) -> int:
        """The last_seq to commit with a step whose body carries `seq`; StaleRequest unless it
        is greater than the last accepted one. Call under the lock."""
        last = self._store.current.last_seq
        if seq is None:
            log.warning(
                "unsequenced owner request accepted (--accept-unsequenced-requests)",
                extra={"action": action},
            )
            return last
        if seq <= last:
            raise StaleRequest(
                f"stale request: seq {seq} is not greater than the last accepted seq {last}"
            )
        return seq

    async def configure_workload(self, body: bytes, signature_hex: str | None) -> None:
        """Authenticate the owner's signed body, validate it, then (re)configure the workload:
        SSH opens and the state commits only once the registry accepted the step."""
        self._require_agreement()
        self._require_unlocked()
        owner_pubkey = self._owner_pubkey(Action.CONFIGURE_WORKLOAD)
        verify_owner_signature(owner_pubkey, body, signature_hex)
        request = parse_configure(body, self._pubkey, accept_unsequenced=self._accept_unsequenced)
        config = request.config
        async with self._lock:
            state = self._store.current
            last_seq = self._check_seq(request.seq, "configure")
            target = next_state(state.lifecycle, Action.CONFIGURE_WORKLOAD, _phase(state))
            if self._closed_for_good:
                raise StepOutOfOrder(state.lifecycle, Action.CONFIGURE_WORKLOAD, _CLOSED_FOR_GOOD)
            self._measurement.require_room_for_configure(
                config.image, config.persist_dirs, config.port
            )
            await self._workload.configure(config, owner_pubkey)
            try:
                await self._record_workload("configure", config, self._workload.running_image_id())
                await self._reregister()
            except Exception as exc:
                await self._abandon_configure(exc)
                raise
            self._store.commit(
                replace(
                    self._store.current,
                    lifecycle=target,
                    workload_config=config,
                    last_seq=last_seq,
                )
            )
            await self._workload.open_setup_access(config, owner_pubkey)
        log.info(
            "workload configured",
            extra={"image": config.image, "port": config.port, "dirs": len(config.persist_dirs)},
        )

    async def _abandon_configure(self, cause: Exception) -> None:
        """The configure was not accepted: remove its container, SSH stays closed, the state
        is unchanged. A failure to remove it is logged; the caller raises `cause`."""
        log.error(
            "configure not accepted: removing its container; SSH setup access stays closed "
            "and the state unchanged",
            extra={"reason": str(cause)},
        )
        try:
            await self._workload.abandon_configure()
        except WorkloadError as exc:
            log.error("cannot remove the refused container", extra={"reason": str(exc)})

    async def expose_workload(self, body: bytes, signature_hex: str | None) -> None:
        """Authenticate the owner's signed body, close setup access, and publish the port and
        commit only once the registry accepted the step."""
        self._require_agreement()
        self._require_unlocked()
        owner_pubkey = self._owner_pubkey(Action.EXPOSE_WORKLOAD)
        verify_owner_signature(owner_pubkey, body, signature_hex)
        request = parse_expose(body, self._pubkey, accept_unsequenced=self._accept_unsequenced)
        image = request.image
        async with self._lock:
            state = self._store.current
            last_seq = self._check_seq(request.seq, "expose")
            target = next_state(state.lifecycle, Action.EXPOSE_WORKLOAD, _phase(state))
            config = state.workload_config
            if config is None or image != config.image:
                raise WorkloadAuthError("image does not match the configured image")
            refusal = self._workload.refusal()
            if refusal is not None:  # nothing runs to expose: change nothing, close nothing
                raise WorkloadFailed(f"the workload was refused at recovery: {refusal}")
            self._closed_for_good = True
            image_id = await self._workload.begin_expose(config)
            try:
                await self._record_workload("expose", config, image_id)
                await self._reregister()
            except Exception as exc:
                log.error(
                    "expose not accepted: SSH setup access stays closed for good and the "
                    "workload port unpublished; the expose may be sent again",
                    extra={"reason": str(exc), "image": image},
                )
                raise
            await self._workload.expose(config)
            self._store.commit(replace(self._store.current, lifecycle=target, last_seq=last_seq))
        log.info("workload exposed", extra={"image": image})


def _workload_event(transition: Transition, config: WorkloadConfig, image_id: str) -> WorkloadEvent:
    return WorkloadEvent(
        transition=transition,
        image=config.image,
        image_id=image_id,
        persist_dirs=config.persist_dirs,
        port=config.port,
    )


def _phase(state: PersistedState) -> WorkloadPhase | None:
    """How far the runtime's last workload step got, as the state file records it."""
    return state.workload.phase if state.workload is not None else None
