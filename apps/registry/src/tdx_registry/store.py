"""Instance records in Pony ORM (SQLite or PostgreSQL) behind the `RecordStore` interface.

Every database call is a synchronous `@db_session` function run on the store's own
single-thread executor, so the event loop never waits on the database and SQLite never sees
two writers from this process. Each registration is one transaction of its own: the row is
read `FOR UPDATE` (PostgreSQL) inside an immediate transaction (SQLite), a new instance is an
insert on the primary key, and Pony retries the whole check on a unique-key or optimistic-check
conflict, so two concurrent registrations of one instance can never both win. A refused merge
rolls its transaction back; `register` returns only once the commit has.

SQLite runs in WAL journal mode with `synchronous=FULL`: every commit appends to the WAL and
fsyncs it before returning, so an acknowledged registration survives power loss exactly as in
the default rollback-journal mode, with one fsync per commit instead of several. Several
processes may share one SQLite file (one host, local disk): every write is an immediate
transaction, and a connection waits up to `SQLITE_BUSY_TIMEOUT_SECONDS` for another process's
write lock instead of failing at once, so writers serialize; a lock held longer than that fails
the operation with `StoreBusy` (503 with `Retry-After`, nothing stored).

The latest workload event of the stored log is stored with it (`workload`, JSON text, `null`
when the log has none), so reading a record parses no log; likewise its latest measured SSH
host key (`ssh_host_key`, JSON text: the key line or `null`). A row stored before such a column
existed has it NULL: the value is read from its log, until its next registration writes it.

The `challenges` table holds the nonces of GET /challenge until a registration consumes one or
it expires: issuing purges a bounded batch of expired nonces and refuses past a cap of
outstanding ones; consuming is one `DELETE ... WHERE nonce = ? AND expires_at > ?` whose row
count says whether this caller won, so two processes sharing the database never both accept
one nonce. A registration runs that DELETE first in its own transaction (`register(...,
consume=)`), so an accepted registration commits once.

Schema: the columns `rtmr3`, `event_log`, `event_log_history`, `workload`, `ssh_host_key`,
`binding_version`, `challenge`, `proof_of_possession`, `tcb_grace_until`,
`verification_refused`, `verdict_history`, `ccel` and `ccel_summary` were added after the
first release as
optional (nullable) columns; there is no migration tooling yet, so a database created before
them needs the `ALTER TABLE` statements of the README (Pony creates the `challenges` table).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from pony.orm import (
    Database,
    DBException,
    Json,
    Optional,
    OrmError,
    PrimaryKey,
    Required,
    db_session,
)
from pony.orm.dbapiprovider import DatabaseError as PonyDatabaseError

from tdx_measure import (
    EventLog,
    EventLogError,
    SshHostKeyEvent,
    WorkloadEvent,
    event_from_object,
    event_to_object,
)
from tdx_report_data import IdentityInfo
from tdx_service_kit import DatabaseTarget

from . import log_store
from .log_leaf import LeafError, next_leaf
from .log_pin import LogKeyPinError, check_pinned
from .log_store import (
    LogCorruptError,
    LogEntry,
    LogTables,
    define_log_entities,
    define_log_key_entity,
)
from .records import InstanceRecord, PastVerdict, Verdict

log = logging.getLogger("tdx_registry.store")

T = TypeVar("T")

MergeFn = Callable[[InstanceRecord | None], InstanceRecord]
"""Given the stored record (or None), the record to store; raises to refuse the registration."""

COMMIT_RETRIES = 5
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 15.0
"""How long a SQLite connection waits for another connection's (another process's) lock before
the operation fails: writers on one file serialize instead of failing "database is locked"."""
BUSY_RETRY_AFTER_SECONDS: Final = 1
"""The `Retry-After` of a 503 answering `StoreBusy`."""
PURGE_BATCH = 100
"""At most this many expired challenges are deleted per issued challenge (bounded work)."""
BACKFILL_BATCH = 500
"""Records stored before the log get their first leaf at start, this many per transaction."""

WireFn = Callable[[InstanceRecord], Mapping[str, Any]]
"""A record's wire form (`routes.instance.record_json`): what a log leaf is computed from."""


class StoreError(Exception):
    """The database failed or stayed contended; the registration was not stored."""


class StoreBusy(StoreError):
    """SQLite stayed locked by another writer past the busy timeout; nothing was stored."""

    retry_after = BUSY_RETRY_AFTER_SECONDS


def _is_sqlite_busy(exc: BaseException) -> bool:
    """Whether `exc` (a Pony error) comes from SQLite's SQLITE_BUSY ("database is locked"):
    Pony keeps the driver's error as `original_exc`, a failed commit its errors as
    `exceptions` (exc_info triples)."""
    pending: list[BaseException] = [exc]
    visited: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, sqlite3.OperationalError):
            return "locked" in str(current) or "busy" in str(current)
        original = getattr(current, "original_exc", None)
        if isinstance(original, BaseException):
            pending.append(original)
        for info in getattr(current, "exceptions", None) or ():
            if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], BaseException):
                pending.append(info[1])
    return False


def _store_error(message: str, exc: BaseException, busy_timeout: float | None) -> StoreError:
    """`StoreError(f"{message}: {exc}")`, or `StoreBusy` when SQLite stayed locked past
    `busy_timeout` seconds (None: not SQLite)."""
    if busy_timeout is not None and _is_sqlite_busy(exc):
        return StoreBusy(
            f"{message}: the SQLite database stayed locked by another writer for more than "
            f"{busy_timeout:g} s"
        )
    return StoreError(f"{message}: {exc}")


class ChallengeNotConsumed(Exception):
    """`register` was to consume a challenge that is not stored or expired (another request
    consumed it first): nothing was written."""


@dataclass(frozen=True)
class Consume:
    """The challenge a registration uses up in its own transaction, and the time it is
    checked against."""

    nonce: bytes
    now: datetime


class RecordStore(Protocol):
    """Where instance records live. Implementations must make `register` atomic."""

    async def get(self, instance_pubkey: bytes) -> InstanceRecord | None: ...

    async def register(
        self, instance_pubkey: bytes, merge: MergeFn, *, consume: Consume | None = None
    ) -> InstanceRecord:
        """Atomically read the record, apply `merge`, and write its result; with `consume`,
        first delete that challenge in the same transaction (`ChallengeNotConsumed`, nothing
        written, unless this call is the one that deletes it)."""
        ...

    async def challenge_open(self, nonce: bytes, *, now: datetime) -> bool:
        """Whether `nonce` is stored and unexpired at `now` (a read: it stays stored)."""
        ...

    async def issue_challenge(
        self, nonce: bytes, expires_at: datetime, *, now: datetime, max_outstanding: int
    ) -> bool:
        """Store `nonce` until `expires_at` unless `max_outstanding` unexpired ones exist (then
        False); purge a bounded batch of expired ones."""
        ...

    async def consume_challenge(self, nonce: bytes, *, now: datetime) -> bool:
        """Atomically delete `nonce` if it is stored and unexpired; True only for the one
        caller that deleted it."""
        ...

    async def close(self) -> None: ...

    async def instance_keys(self, *, after: bytes | None, limit: int) -> list[bytes]:
        """Up to `limit` instance keys in ascending order, each greater than `after` (a page of
        a re-appraisal pass)."""
        ...

    async def log_checkpoint_state(self) -> tuple[int, bytes]:
        """The log's current size and root hash, read together."""
        ...

    async def log_entries(self, start: int, end: int) -> list[LogEntry]:
        """Leaves `start` to `min(end, size) - 1`; `LogRangeError` unless `start` < size."""
        ...

    async def log_inclusion(self, index: int, tree_size: int) -> list[bytes]:
        """The inclusion proof of leaf `index` in the tree of `tree_size` leaves."""
        ...

    async def log_consistency(self, first: int, second: int) -> list[bytes]:
        """The consistency proof from the tree of `first` leaves to that of `second`."""
        ...


def _sqlite_durable_wal(db: Database, connection: Any) -> None:
    """WAL journal and a WAL fsync at every commit (see the module docstring). A failure (a
    file that is not a database) is raised as Pony's `DatabaseError`, so that every store call
    answers it as a `StoreError` (Pony passes this hook's sqlite3 errors through unwrapped)."""
    try:
        cursor = connection.cursor()
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            log.warning("SQLite refused WAL journal mode", extra={"journal_mode": repr(mode)})
        cursor.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise PonyDatabaseError(exc) from exc


def _define_entities(db: Database) -> Any:
    """Declare the `Instance` entity on a fresh `Database` (one per store, no global)."""

    class Instance(db.Entity):  # type: ignore[misc]
        _table_ = "instances"
        pubkey = PrimaryKey(str, 64)
        ppid = Required(bytes)
        attestation_quote = Required(bytes)
        operator_pubkey = Optional(bytes, nullable=True)
        operator_instance_signature = Optional(bytes, nullable=True)
        operator_identity_signature = Optional(bytes, nullable=True)
        owner_pubkey = Optional(bytes, nullable=True)
        owner_instance_signature = Optional(bytes, nullable=True)
        owner_identity_signature = Optional(bytes, nullable=True)
        tcb_status = Optional(str, nullable=True)
        advisory_ids = Required(Json)
        mr_td = Required(bytes)
        verified_at = Required(datetime, precision=6)
        verification_skipped = Required(bool)
        registered_at = Required(datetime, precision=6)
        updated_at = Required(datetime, precision=6)
        rtmr3 = Optional(bytes, nullable=True)
        event_log = Optional(str, nullable=True)
        event_log_history = Optional(Json, nullable=True)
        workload = Optional(str, nullable=True)
        ssh_host_key = Optional(str, nullable=True)
        binding_version = Optional(int, nullable=True)
        challenge = Optional(bytes, nullable=True)
        proof_of_possession = Optional(bytes, nullable=True)
        log_index = Optional(int, size=64, nullable=True)
        tcb_grace_until = Optional(datetime, precision=6, nullable=True)
        verification_refused = Optional(str, nullable=True)
        verdict_history = Optional(Json, nullable=True)
        ccel = Optional(bytes, nullable=True)
        ccel_summary = Optional(str, nullable=True)

    class Challenge(db.Entity):  # type: ignore[misc]
        _table_ = "challenges"
        nonce = PrimaryKey(str, 64)
        expires_at = Required(int, size=64, index=True)

    return Instance, Challenge


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch (UTC): the challenges' expiry, compared as integers on both
    backends."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _identity(
    pubkey: bytes | None, inst_sig: bytes | None, id_sig: bytes | None
) -> IdentityInfo | None:
    if pubkey is None or inst_sig is None or id_sig is None:
        return None
    return IdentityInfo(
        pubkey=bytes(pubkey), instance_signature=bytes(inst_sig), identity_signature=bytes(id_sig)
    )


def _identity_columns(prefix: str, identity: IdentityInfo | None) -> dict[str, bytes | None]:
    return {
        f"{prefix}_pubkey": identity.pubkey if identity else None,
        f"{prefix}_instance_signature": identity.instance_signature if identity else None,
        f"{prefix}_identity_signature": identity.identity_signature if identity else None,
    }


def _workload_text(event: WorkloadEvent | None) -> str:
    return json.dumps(None if event is None else event_to_object(event), sort_keys=True)


def _stored_workload(text: str | None, event_log: str | None) -> WorkloadEvent | None:
    """The row's workload event: its `workload` column, or for a row stored before that column
    existed (NULL), its log's. Data that does not decode means the database was altered."""
    if text is None:
        if event_log is None:
            return None
        try:
            return EventLog.from_json(event_log).workload
        except EventLogError as exc:
            raise StoreError(f"the stored event log does not parse: {exc.reason}") from None
    try:
        event = None if text == "null" else event_from_object(json.loads(text))
    except ValueError as exc:  # EventLogError and JSONDecodeError are ValueErrors
        raise StoreError(f"the stored workload does not decode: {exc}") from None
    if event is not None and not isinstance(event, WorkloadEvent):
        raise StoreError("the stored workload is not a workload event")
    return event


def _ssh_host_key_text(line: str | None) -> str:
    return json.dumps(line)


def _stored_ssh_host_key(text: str | None, event_log: str | None) -> str | None:
    """The row's SSH host key line: its `ssh_host_key` column, or for a row stored before that
    column existed (NULL), its log's. A value that does not decode means the database was
    altered."""
    if text is None:
        if event_log is None:
            return None
        try:
            return EventLog.from_json(event_log).ssh_host_key
        except EventLogError as exc:
            raise StoreError(f"the stored event log does not parse: {exc.reason}") from None
    try:
        line = json.loads(text)
        if line is not None:
            line = SshHostKeyEvent(public_key=line).public_key
    except ValueError as exc:  # EventLogError and JSONDecodeError are ValueErrors
        raise StoreError(f"the stored SSH host key does not decode: {exc}") from None
    return line if isinstance(line, str) else None


def _to_record(row: Any, *, with_workload: bool = True) -> InstanceRecord:
    """The row as a record; `with_workload=False` leaves the stored workload and SSH host key
    unread (the merge rule never uses them, so a registration still rewrites a row whose values
    were altered)."""
    return InstanceRecord(
        instance_pubkey=bytes.fromhex(row.pubkey),
        ppid=bytes(row.ppid),
        attestation_quote=bytes(row.attestation_quote),
        operator=_identity(
            row.operator_pubkey, row.operator_instance_signature, row.operator_identity_signature
        ),
        owner=_identity(
            row.owner_pubkey, row.owner_instance_signature, row.owner_identity_signature
        ),
        verdict=Verdict(
            tcb_status=row.tcb_status,
            advisory_ids=tuple(str(a) for a in row.advisory_ids),
            mr_td=bytes(row.mr_td),
            verified_at=_aware(row.verified_at),
            skipped=bool(row.verification_skipped),
            rtmr3=None if row.rtmr3 is None else bytes(row.rtmr3),
            tcb_grace_until=_optional_aware(row.tcb_grace_until),
            refused=row.verification_refused,
        ),
        registered_at=_aware(row.registered_at),
        updated_at=_aware(row.updated_at),
        event_log=row.event_log,
        workload=_stored_workload(row.workload, row.event_log) if with_workload else None,
        ssh_host_key=(
            _stored_ssh_host_key(row.ssh_host_key, row.event_log) if with_workload else None
        ),
        event_log_history=tuple(str(text) for text in row.event_log_history or ()),
        binding_version=1 if row.binding_version is None else int(row.binding_version),
        challenge=None if row.challenge is None else bytes(row.challenge),
        proof_of_possession=(
            None if row.proof_of_possession is None else bytes(row.proof_of_possession)
        ),
        log_index=None if row.log_index is None else int(row.log_index),
        verdict_history=_stored_verdict_history(row.verdict_history),
        ccel=None if row.ccel is None else bytes(row.ccel),
        ccel_summary=row.ccel_summary,
    )


def _to_columns(record: InstanceRecord) -> dict[str, Any]:
    return {
        "ppid": record.ppid,
        "attestation_quote": record.attestation_quote,
        **_identity_columns("operator", record.operator),
        **_identity_columns("owner", record.owner),
        "tcb_status": record.verdict.tcb_status,
        "advisory_ids": list(record.verdict.advisory_ids),
        "mr_td": record.verdict.mr_td,
        "verified_at": _naive_utc(record.verdict.verified_at),
        "verification_skipped": record.verdict.skipped,
        "registered_at": _naive_utc(record.registered_at),
        "updated_at": _naive_utc(record.updated_at),
        "rtmr3": record.verdict.rtmr3,
        "event_log": record.event_log,
        "workload": _workload_text(record.workload),
        "ssh_host_key": _ssh_host_key_text(record.ssh_host_key),
        "event_log_history": list(record.event_log_history),
        "binding_version": record.binding_version,
        "challenge": record.challenge,
        "proof_of_possession": record.proof_of_possession,
        "tcb_grace_until": _optional_naive(record.verdict.tcb_grace_until),
        "verification_refused": record.verdict.refused,
        "verdict_history": [_past_verdict_object(past) for past in record.verdict_history],
        "ccel": record.ccel,
        "ccel_summary": record.ccel_summary,
    }


def _bind_database(db: Database, target: DatabaseTarget, sqlite_busy_timeout: float) -> None:
    """Bind `db` to `target` and create its entities' tables if missing."""
    if target.sqlite_path is not None:
        db.on_connect(provider="sqlite")(_sqlite_durable_wal)
        # `timeout` is sqlite3.connect's: the connection's busy timeout (PRAGMA busy_timeout)
        db.bind(
            provider="sqlite",
            filename=str(target.sqlite_path),
            create_db=True,
            timeout=sqlite_busy_timeout,
        )
    else:
        db.bind(provider="postgres", dsn=target.postgres_url)
    db.generate_mapping(create_tables=True)


@db_session(immediate=True)  # type: ignore[untyped-decorator]
def _pin_sync(db: Database, verifier_key: str) -> str:
    pinned: str = log_store.pin_verifier_key(db, verifier_key)
    return pinned


def _set_up_retried(set_up: Callable[[], T]) -> T:
    """`set_up()`, once more if it fails with a database error: a start racing another on an
    empty database can lose Pony's check-then-create of a table (PostgreSQL: a duplicate
    `pg_type` key), and the second try finds the table. Every step is create-if-missing."""
    try:
        return set_up()
    except (OrmError, DBException) as exc:
        log.debug("retrying the database set-up once", extra={"reason": str(exc)})
        return set_up()


def _pin_once(target: DatabaseTarget, verifier_key: str, sqlite_busy_timeout: float) -> str:
    db = Database()
    define_log_key_entity(db)
    try:
        _bind_database(db, target, sqlite_busy_timeout)
        pinned: str = _pin_sync(db, verifier_key)
        return pinned
    finally:
        db.disconnect()


def pin_log_key(
    target: DatabaseTarget,
    verifier_key: str,
    *,
    sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
) -> None:
    """Pin `verifier_key` in the database of `target` if none is pinned, else check it is the
    pinned one (`LogKeyMismatch`), on a connection of its own closed before returning: the
    command's check before it serves. `LogKeyPinError` when the database fails."""
    try:
        pinned = _set_up_retried(lambda: _pin_once(target, verifier_key, sqlite_busy_timeout))
    except (OrmError, DBException, LogCorruptError) as exc:
        busy = None if target.sqlite_path is None else sqlite_busy_timeout
        reason = " ".join(str(_store_error("the database failed", exc, busy)).split())
        raise LogKeyPinError(f"cannot pin the log key in the database: {reason}") from None
    check_pinned(pinned, verifier_key)


class PonyRecordStore:
    """`RecordStore` on Pony ORM; create it with `await PonyRecordStore.open(target)`."""

    def __init__(
        self,
        db: Database,
        instance: Any,
        challenge: Any,
        executor: ThreadPoolExecutor,
        *,
        log_tables: LogTables,
        wire: WireFn,
        busy_timeout: float | None = None,
    ) -> None:
        self._db = db
        self._busy_timeout = busy_timeout
        self._instance = instance
        self._challenge = challenge
        self._executor = executor
        self._log = log_tables
        self._wire = wire

    @classmethod
    async def open(
        cls,
        target: DatabaseTarget,
        *,
        wire: WireFn | None = None,
        backfill_batch: int = BACKFILL_BATCH,
        sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
        log_verifier_key: str | None = None,
    ) -> PonyRecordStore:
        """Bind a fresh Database to `target`, create the tables if missing (on the DB thread),
        and give every record stored before the log its first leaf (`backfill_log`). `wire`
        is the records' wire form the leaves are computed from (default: GET /instance's);
        `sqlite_busy_timeout` how long a SQLite connection waits for another's lock (seconds,
        > 0; the registry uses the default, tests a shorter one). `log_verifier_key`, the
        serving registry's: pinned in the database if none is, else `LogKeyMismatch` unless it
        is the pinned one (None: not checked, e.g. `tdx-registry reappraise`, which signs
        nothing)."""
        if not sqlite_busy_timeout > 0:
            raise ValueError("sqlite_busy_timeout must be > 0")
        if wire is None:
            from .routes.instance import record_json  # here: the routes import this module

            wire = record_json
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-db")
        try:
            db, instance, challenge, tables = await asyncio.get_running_loop().run_in_executor(
                executor,
                _set_up_retried,
                lambda: cls._bind(target, sqlite_busy_timeout, log_verifier_key),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info("record store open", extra={"database": target.describe()})
        busy_timeout = None if target.sqlite_path is None else sqlite_busy_timeout
        store = cls(
            db,
            instance,
            challenge,
            executor,
            log_tables=tables,
            wire=wire,
            busy_timeout=busy_timeout,
        )
        try:
            await store.backfill_log(backfill_batch)
        except BaseException:
            await store.close()
            raise
        return store

    @staticmethod
    def _bind(
        target: DatabaseTarget, sqlite_busy_timeout: float, log_verifier_key: str | None
    ) -> tuple[Database, Any, Any, LogTables]:
        db = Database()
        instance, challenge = _define_entities(db)
        tables = define_log_entities(db)
        try:
            _bind_database(db, target, sqlite_busy_timeout)
            with db_session:
                log_store.ensure_head(db)
            if log_verifier_key is not None:
                check_pinned(_pin_sync(db, log_verifier_key), log_verifier_key)
        except BaseException:
            db.disconnect()
            raise
        return db, instance, challenge, tables

    async def backfill_log(self, batch: int = BACKFILL_BATCH) -> int:
        """Append one leaf (changes `["instance"]`) for each record without a `log_index`
        (stored before the log), `batch` records per transaction, logging progress; how many."""
        try:
            remaining = await self._run(self._unlogged_count_sync)
            if remaining == 0:
                return 0
            log.info("appending the records stored before the log", extra={"records": remaining})
            done = 0
            while True:
                appended = await self._run(self._backfill_batch_sync, batch)
                if appended == 0:
                    break
                done += appended
                log.info(
                    "log backfill progress",
                    extra={"appended": done, "records": max(remaining, done)},
                )
        except (OrmError, DBException, LogCorruptError, LeafError) as exc:
            raise StoreError(f"the log backfill failed: {exc}") from exc
        log.info("log backfill done", extra={"appended": done})
        return done

    def _error(self, message: str, exc: BaseException) -> StoreError:
        """The `StoreError` (`StoreBusy` when SQLite stayed locked) for a failed call."""
        return _store_error(message, exc, self._busy_timeout)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def get(self, instance_pubkey: bytes) -> InstanceRecord | None:
        try:
            return await self._run(self._get_sync, instance_pubkey.hex())
        except (OrmError, DBException) as exc:
            raise self._error("reading the record failed", exc) from exc

    async def register(
        self, instance_pubkey: bytes, merge: MergeFn, *, consume: Consume | None = None
    ) -> InstanceRecord:
        """Read, merge and write the record in one transaction (which first consumes the
        challenge of `consume`, when given); answer once it is committed."""
        nonce = None if consume is None else (consume.nonce.hex(), _micros(consume.now))
        try:
            return await self._run(self._register_sync, instance_pubkey.hex(), merge, nonce)
        except (OrmError, DBException) as exc:
            raise self._error("the registration could not be committed", exc) from exc

    async def challenge_open(self, nonce: bytes, *, now: datetime) -> bool:
        try:
            return await self._run(self._challenge_open_sync, nonce.hex(), _micros(now))
        except (OrmError, DBException) as exc:
            raise self._error("the challenge could not be checked", exc) from exc

    async def issue_challenge(
        self, nonce: bytes, expires_at: datetime, *, now: datetime, max_outstanding: int
    ) -> bool:
        try:
            return await self._run(
                self._issue_challenge_sync,
                nonce.hex(),
                _micros(expires_at),
                _micros(now),
                max_outstanding,
            )
        except (OrmError, DBException) as exc:
            raise self._error("the challenge could not be stored", exc) from exc

    async def consume_challenge(self, nonce: bytes, *, now: datetime) -> bool:
        try:
            return await self._run(self._consume_challenge_sync, nonce.hex(), _micros(now))
        except (OrmError, DBException) as exc:
            raise self._error("the challenge could not be checked", exc) from exc

    async def instance_keys(self, *, after: bytes | None, limit: int) -> list[bytes]:
        try:
            keys = await self._run(
                self._instance_keys_sync, None if after is None else after.hex(), limit
            )
        except (OrmError, DBException) as exc:
            raise self._error("listing the instances failed", exc) from exc
        return [bytes.fromhex(key) for key in keys]

    async def log_checkpoint_state(self) -> tuple[int, bytes]:
        return await self._log_read(self._log_checkpoint_sync)

    async def log_entries(self, start: int, end: int) -> list[LogEntry]:
        return await self._log_read(self._log_entries_sync, start, end)

    async def log_inclusion(self, index: int, tree_size: int) -> list[bytes]:
        return await self._log_read(self._log_inclusion_sync, index, tree_size)

    async def log_consistency(self, first: int, second: int) -> list[bytes]:
        return await self._log_read(self._log_consistency_sync, first, second)

    async def _log_read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._run(fn, *args)
        except (OrmError, DBException, LogCorruptError) as exc:
            raise self._error("reading the log failed", exc) from exc

    async def close(self) -> None:
        """Let registrations already queued commit, then disconnect."""
        try:
            await self._run(self._db.disconnect)
        finally:
            self._executor.shutdown(wait=True)

    def _get_sync(self, key: str) -> InstanceRecord | None:
        with db_session:
            row = self._instance.get(pubkey=key)
            return None if row is None else _to_record(row)

    @db_session(retry=COMMIT_RETRIES, immediate=True)  # type: ignore[untyped-decorator]
    def _register_sync(
        self, key: str, merge: MergeFn, nonce: tuple[str, int] | None = None
    ) -> InstanceRecord:
        """The read-check-write of one registration, after the DELETE of its challenge (when
        given: its row count decides, as in `_consume_challenge_sync`); Pony retries it on
        commit conflicts and rolls it back when `merge` refuses."""
        if nonce is not None and not self._delete_challenge(*nonce):
            raise ChallengeNotConsumed
        row = self._instance.get_for_update(pubkey=key)
        record = merge(None if row is None else _to_record(row, with_workload=False))
        if record.instance_pubkey.hex() != key:
            raise ValueError("merge changed the instance key")
        log_index = None if row is None or row.log_index is None else int(row.log_index)
        log_index = self._append_change(key, log_index, record)
        columns = _to_columns(record)
        columns["log_index"] = log_index
        if row is None:
            self._instance(pubkey=key, **columns)
        else:
            row.set(**columns)
        return replace(record, log_index=log_index)

    def _append_change(self, key: str, log_index: int | None, record: InstanceRecord) -> int:
        """In the registration's transaction: append the leaf of `record` unless its audited
        state equals that of the instance's latest leaf (`log_index`); the record's index. A
        record without a leaf yet (new, or stored before the log) gets `changes: ["instance"]`."""
        try:
            previous = None if log_index is None else log_store.leaf_state(self._log, log_index)
            leaf = next_leaf(key, previous, self._wire(record))
            if leaf is None and log_index is not None:
                return log_index
            if leaf is None:
                raise LogCorruptError("a record without a leaf has nothing to log")
            return log_store.append(self._db, self._log, leaf[0], key)
        except (LogCorruptError, LeafError) as exc:
            raise StoreError(f"the log cannot record this registration: {exc}") from exc

    def _unlogged_count_sync(self) -> int:
        with db_session:
            count: int = self._instance.select(lambda i: i.log_index is None).count()
            return count

    @db_session(retry=COMMIT_RETRIES, immediate=True)  # type: ignore[untyped-decorator]
    def _backfill_batch_sync(self, batch: int) -> int:
        """One transaction: the first leaf of up to `batch` records without one (rows locked
        before the head, the order registrations take them in)."""
        rows = (
            self._instance.select(lambda i: i.log_index is None)
            .order_by(self._instance.pubkey)
            .for_update()[:batch]
        )
        for row in rows:
            try:
                record = _to_record(row)
            except StoreError:  # an altered workload/SSH column: GET /instance fails on it too
                record = _to_record(row, with_workload=False)
            leaf = next_leaf(row.pubkey, None, self._wire(record))
            if leaf is None:
                raise LogCorruptError("a record without a leaf has nothing to log")
            row.log_index = log_store.append(self._db, self._log, leaf[0], row.pubkey)
        return len(rows)

    def _log_checkpoint_sync(self) -> tuple[int, bytes]:
        with db_session:
            return log_store.checkpoint_state(self._db, self._log)

    def _log_entries_sync(self, start: int, end: int) -> list[LogEntry]:
        with db_session:
            return log_store.entries(self._log, start, end)

    def _log_inclusion_sync(self, index: int, tree_size: int) -> list[bytes]:
        with db_session:
            return log_store.inclusion(self._db, self._log, index, tree_size)

    def _log_consistency_sync(self, first: int, second: int) -> list[bytes]:
        with db_session:
            return log_store.consistency(self._db, self._log, first, second)

    @db_session(retry=COMMIT_RETRIES, immediate=True)  # type: ignore[untyped-decorator]
    def _issue_challenge_sync(
        self, nonce: str, expires_us: int, now_us: int, max_outstanding: int
    ) -> bool:
        """Purge up to `PURGE_BATCH` expired challenges, then store `nonce` unless the cap of
        unexpired ones is reached."""
        self._db.execute(
            "DELETE FROM challenges WHERE nonce IN "
            "(SELECT nonce FROM challenges WHERE expires_at <= $now_us LIMIT $batch)",
            {"now_us": now_us, "batch": PURGE_BATCH},
        )
        outstanding: int = self._challenge.select(lambda c: c.expires_at > now_us).count()
        if outstanding >= max_outstanding:
            return False
        self._challenge(nonce=nonce, expires_at=expires_us)
        return True

    @db_session(immediate=True)  # type: ignore[untyped-decorator]
    def _consume_challenge_sync(self, nonce: str, now_us: int) -> bool:
        """One DELETE of the unexpired nonce; its row count decides (never two winners)."""
        return self._delete_challenge(nonce, now_us)

    def _delete_challenge(self, nonce: str, now_us: int) -> bool:
        """One DELETE statement, in plain SQL (the same query built by Pony cost ~0.1 ms more)."""
        cursor = self._db.execute(
            "DELETE FROM challenges WHERE nonce = $nonce AND expires_at > $now_us",
            {"nonce": nonce, "now_us": now_us},
        )
        deleted: int = cursor.rowcount
        return deleted == 1

    def _challenge_open_sync(self, nonce: str, now_us: int) -> bool:
        with db_session:
            rows = self._db.select(
                "nonce FROM challenges WHERE nonce = $nonce AND expires_at > $now_us",
                {"nonce": nonce, "now_us": now_us},
            )
            return len(rows) == 1

    def _instance_keys_sync(self, after: str | None, limit: int) -> list[str]:
        """One page of primary keys (only the keys are read, in the primary key's order)."""
        with db_session:
            if after is None:
                rows = self._db.select(
                    "pubkey FROM instances ORDER BY pubkey LIMIT $limit", {"limit": limit}
                )
            else:
                rows = self._db.select(
                    "pubkey FROM instances WHERE pubkey > $after ORDER BY pubkey LIMIT $limit",
                    {"after": after, "limit": limit},
                )
            return [str(key) for key in rows]


def _optional_aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def _optional_naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else _naive_utc(moment)


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _past_verdict_object(past: PastVerdict) -> dict[str, Any]:
    return {
        "tcb_status": past.tcb_status,
        "advisory_ids": list(past.advisory_ids),
        "tcb_grace_until": _time_text(past.tcb_grace_until),
        "refused": past.refused,
        "skipped": past.skipped,
        "verified_at": _time_text(past.verified_at),
        "replaced_at": _time_text(past.replaced_at),
    }


def _stored_verdict_history(value: Any) -> tuple[PastVerdict, ...]:
    """The row's replaced verdicts (NULL on a row stored before the column: none). Data that
    does not decode means the database was altered."""
    if value is None:
        return ()
    try:
        return tuple(
            PastVerdict(
                tcb_status=None if item["tcb_status"] is None else str(item["tcb_status"]),
                advisory_ids=tuple(str(a) for a in item["advisory_ids"]),
                tcb_grace_until=(
                    None
                    if item["tcb_grace_until"] is None
                    else datetime.fromisoformat(item["tcb_grace_until"])
                ),
                refused=None if item["refused"] is None else str(item["refused"]),
                skipped=bool(item["skipped"]),
                verified_at=datetime.fromisoformat(item["verified_at"]),
                replaced_at=datetime.fromisoformat(item["replaced_at"]),
            )
            for item in value
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the stored verdict history does not decode: {exc!r}") from None
