"""The broker's state in Pony ORM (SQLite or PostgreSQL): sealed resources, the resource
policy (current and history) and the admin audit trail.

Every database call is a synchronous `@db_session` function run on the store's own
single-thread executor, so the event loop never waits on the database. An upload writes its
resource row and its audit row in one transaction, as does a policy change: either both are
committed or neither. Resources arrive here already sealed (`sealing.ResourceSealer`): the
store never sees a plaintext. SQLite runs in WAL mode with `synchronous=FULL`, so an
acknowledged upload survives power loss.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pony.orm import (
    Database,
    DBException,
    LongStr,
    OrmError,
    PrimaryKey,
    Required,
    db_session,
    desc,
)
from pony.orm.dbapiprovider import DatabaseError as PonyDatabaseError

from tdx_service_kit import DatabaseTarget

log = logging.getLogger("tdx_kbs.store")

T = TypeVar("T")

COMMIT_RETRIES = 5
ACTION_RESOURCE_PUT = "resource-put"
ACTION_POLICY_SET = "policy-set"


class StoreError(Exception):
    """The database failed or stayed contended; nothing was stored."""


@dataclass(frozen=True)
class StoredResource:
    """A resource as stored: sealed bytes and the admin key (hex) that uploaded it."""

    path: str
    sealed: bytes
    uploader: str
    updated_at: datetime


@dataclass(frozen=True)
class StoredPolicy:
    """One version of the resource policy."""

    version: int
    text: str
    sha256: str
    admin: str
    set_at: datetime


@dataclass(frozen=True)
class PolicyHead:
    """Which policy version is current: its version and recorded SHA-256 (not its text)."""

    version: int
    sha256: str


@dataclass(frozen=True)
class AuditEntry:
    """One admin action: when, by which admin key (hex), what, on which resource path or
    policy SHA-256. Never the secret."""

    at: datetime
    admin: str
    action: str
    target: str


def _sqlite_durable_wal(db: Database, connection: Any) -> None:
    """WAL journal, fsync at every commit. A failure here (a file that is not a database) is
    raised as Pony's `DatabaseError`, which every store call answers as a `StoreError` (503):
    Pony passes this hook's own sqlite3 errors through unwrapped (a 500)."""
    try:
        cursor = connection.cursor()
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            log.warning("SQLite refused WAL journal mode", extra={"journal_mode": repr(mode)})
        cursor.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise PonyDatabaseError(exc) from exc


def _define_entities(db: Database) -> tuple[Any, Any, Any]:
    """Declare the entities on a fresh `Database` (one per store, no global)."""

    class Resource(db.Entity):  # type: ignore[misc]
        _table_ = "kbs_resources"
        path = PrimaryKey(str, 400)
        sealed = Required(bytes)
        uploader = Required(str, 64)
        updated_at = Required(datetime, precision=6)

    class Policy(db.Entity):  # type: ignore[misc]
        _table_ = "kbs_policies"
        version = PrimaryKey(int, auto=True)
        text = Required(LongStr, autostrip=False)
        sha256 = Required(str, 64)
        admin = Required(str, 64)
        set_at = Required(datetime, precision=6)

    class Audit(db.Entity):  # type: ignore[misc]
        _table_ = "kbs_audit"
        id = PrimaryKey(int, auto=True)
        at = Required(datetime, precision=6)
        admin = Required(str, 64)
        action = Required(str, 32)
        target = Required(str, 400)

    return Resource, Policy, Audit


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


class KbsStore:
    """The broker's store; create it with `await KbsStore.open(target)`."""

    def __init__(self, db: Database, entities: tuple[Any, Any, Any], executor: ThreadPoolExecutor):
        self._db = db
        self._resource, self._policy, self._audit = entities
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, target: DatabaseTarget) -> KbsStore:
        """Bind a fresh Database to `target`, creating missing tables (on the DB thread)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbs-db")
        try:
            db, entities = await asyncio.get_running_loop().run_in_executor(
                executor, cls._bind, target
            )
        except (OrmError, DBException) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open the database {target.describe()}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info("store open", extra={"database": target.describe()})
        return cls(db, entities, executor)

    @staticmethod
    def _bind(target: DatabaseTarget) -> tuple[Database, tuple[Any, Any, Any]]:
        db = Database()
        entities = _define_entities(db)
        if target.sqlite_path is not None:
            db.on_connect(provider="sqlite")(_sqlite_durable_wal)
            db.bind(provider="sqlite", filename=str(target.sqlite_path), create_db=True)
        else:
            db.bind(provider="postgres", dsn=target.postgres_url)
        db.generate_mapping(create_tables=True)
        return db, entities

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (OrmError, DBException) as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    async def put_resource(self, path: str, sealed: bytes, uploader: str, at: datetime) -> None:
        """Store (or replace) the sealed resource at `path` and audit it, in one transaction."""
        await self._run("storing the resource", self._put_sync, path, sealed, uploader, at)

    async def get_resource(self, path: str) -> StoredResource | None:
        return await self._run("reading the resource", self._get_sync, path)

    async def release_state(self, path: str) -> tuple[StoredResource | None, PolicyHead | None]:
        """What a release reads, in one transaction and one trip to the database thread: the
        resource at `path` and the current policy's head (its text is not read)."""
        return await self._run("reading the resource", self._release_state_sync, path)

    async def set_policy(self, text: str, sha256: str, admin: str, at: datetime) -> StoredPolicy:
        """Make `text` the current policy (a new version) and audit it, in one transaction."""
        return await self._run("storing the policy", self._set_policy_sync, text, sha256, admin, at)

    async def current_policy(self) -> StoredPolicy | None:
        return await self._run("reading the policy", self._current_policy_sync)

    async def policy_history(self) -> list[StoredPolicy]:
        """Every stored policy version, oldest first."""
        return await self._run("reading the policies", self._policy_history_sync)

    async def audit_entries(self) -> list[AuditEntry]:
        """The audit trail, oldest first."""
        return await self._run("reading the audit trail", self._audit_sync)

    async def ping(self) -> None:
        """Ask the database a trivial query on the store's thread (readiness); StoreError when
        it does not answer, also once the store is closed."""
        if self._closed:
            raise StoreError("the store is closed")
        await self._run("checking the database", self._ping_sync)

    async def close(self) -> None:
        """Disconnect and stop the store's thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._run("closing the database", self._db.disconnect)
        finally:
            self._executor.shutdown(wait=True)

    @db_session(retry=COMMIT_RETRIES, immediate=True)  # type: ignore[untyped-decorator]
    def _put_sync(self, path: str, sealed: bytes, uploader: str, at: datetime) -> None:
        when = _naive_utc(at)
        row = self._resource.get_for_update(path=path)
        if row is None:
            self._resource(path=path, sealed=sealed, uploader=uploader, updated_at=when)
        else:
            row.set(sealed=sealed, uploader=uploader, updated_at=when)
        self._audit(at=when, admin=uploader, action=ACTION_RESOURCE_PUT, target=path)

    @staticmethod
    def _resource_of(row: Any) -> StoredResource:
        return StoredResource(
            path=row.path,
            sealed=bytes(row.sealed),
            uploader=row.uploader,
            updated_at=_aware(row.updated_at),
        )

    def _ping_sync(self) -> None:
        with db_session:
            self._db.select("SELECT 1")

    def _get_sync(self, path: str) -> StoredResource | None:
        with db_session:
            row = self._resource.get(path=path)
            return None if row is None else self._resource_of(row)

    def _release_state_sync(self, path: str) -> tuple[StoredResource | None, PolicyHead | None]:
        with db_session:
            row = self._resource.get(path=path)
            # `text` is a LongStr, loaded lazily: this reads only the version and SHA-256.
            policy = self._policy.select().order_by(desc(self._policy.version)).first()
            return (
                None if row is None else self._resource_of(row),
                None if policy is None else PolicyHead(int(policy.version), policy.sha256),
            )

    @staticmethod
    def _policy_of(row: Any) -> StoredPolicy:
        return StoredPolicy(
            version=int(row.version),
            text=str(row.text),
            sha256=row.sha256,
            admin=row.admin,
            set_at=_aware(row.set_at),
        )

    @db_session(retry=COMMIT_RETRIES, immediate=True)  # type: ignore[untyped-decorator]
    def _set_policy_sync(self, text: str, sha256: str, admin: str, at: datetime) -> StoredPolicy:
        when = _naive_utc(at)
        row = self._policy(text=text, sha256=sha256, admin=admin, set_at=when)
        self._audit(at=when, admin=admin, action=ACTION_POLICY_SET, target=sha256)
        row.flush()
        return self._policy_of(row)

    def _current_policy_sync(self) -> StoredPolicy | None:
        with db_session:
            row = self._policy.select().order_by(desc(self._policy.version)).first()
            return None if row is None else self._policy_of(row)

    def _policy_history_sync(self) -> list[StoredPolicy]:
        with db_session:
            return [
                self._policy_of(r) for r in self._policy.select().order_by(self._policy.version)
            ]

    def _audit_sync(self) -> list[AuditEntry]:
        with db_session:
            return [
                AuditEntry(at=_aware(r.at), admin=r.admin, action=r.action, target=r.target)
                for r in self._audit.select().order_by(self._audit.id)
            ]
