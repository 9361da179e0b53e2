"""The log's verifier key pinned in the database: the first start stores it (the public verifier
key only), a later start with another key refuses to serve (exit 1, one line naming both key
ids, no traceback), the same key serves; two first starts at once pin one key. Each test runs
on every selected backend (REGISTRY_TEST_BACKEND)."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pony.orm import Database, db_session
from test_registry_log_processes import ORIGIN, free_port, registry_process

from tdx_merkle import NoteSigner
from tdx_registry import DatabaseTarget, PonyRecordStore
from tdx_registry.cli import main
from tdx_registry.log_key import load_or_create_log_key
from tdx_registry.log_pin import LogKeyMismatch, LogKeyPinError, key_id
from tdx_registry.log_store import define_log_key_entity
from tdx_registry.store import pin_log_key


def _pinned_rows(target: DatabaseTarget) -> list[tuple[int, str]]:
    """Every row of the `log_key` table, read on a connection of the test's own."""
    db = Database()
    define_log_key_entity(db)
    if target.sqlite_path is not None:
        db.bind(provider="sqlite", filename=str(target.sqlite_path))
    else:
        db.bind(provider="postgres", dsn=target.postgres_url)
    db.generate_mapping(create_tables=False)
    try:
        with db_session:
            rows = db.select("SELECT id, verifier_key FROM log_key")
            return [(int(row[0]), str(row[1])) for row in rows]
    finally:
        db.disconnect()


def _import_provider(target: DatabaseTarget) -> None:
    """Import Pony's provider module before threads race: Pony imports it at the first `bind`,
    and threads of one process importing it at once fail (separate processes cannot)."""
    importlib.import_module(
        "pony.orm.dbproviders." + ("sqlite" if target.sqlite_path is not None else "postgres")
    )


def _signer(origin: str = ORIGIN) -> NoteSigner:
    return NoteSigner(origin, Ed25519PrivateKey.generate())


def _key_file(path: Path, signer: NoteSigner) -> Path:
    path.write_text(signer.signer_key() + "\n")
    path.chmod(0o600)
    return path


def _database_args(target: DatabaseTarget) -> list[str]:
    if target.postgres_url is not None:
        return ["--db-url", target.postgres_url]
    assert target.sqlite_path is not None
    return ["--db-path", str(target.sqlite_path)]


def _command(target: DatabaseTarget, key: Path) -> subprocess.CompletedProcess[str]:
    """`tdx-registry serve` run to its end (it must refuse: a timeout fails the test)."""
    env = {**os.environ, "SKIP_TDX_AUTH": "1", "REGISTRY_ANY_MEASUREMENT": "1"}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from tdx_registry.cli import main; sys.exit(main())",
         "serve", "--port", str(free_port()), "--log-key-path", str(key), "--log-origin", ORIGIN,
         *_database_args(target)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_first_start_pins_the_public_verifier_key_only(db_target: DatabaseTarget) -> None:
    signer = _signer()
    pin_log_key(db_target, signer.verifier_key())
    rows = _pinned_rows(db_target)
    assert rows == [(1, signer.verifier_key())]
    assert "PRIVATE" not in rows[0][1]
    pin_log_key(db_target, signer.verifier_key())  # the same key: accepted, nothing added
    assert _pinned_rows(db_target) == rows


def test_another_key_is_refused_naming_both_key_ids(db_target: DatabaseTarget) -> None:
    first, second = _signer(), _signer()
    pin_log_key(db_target, first.verifier_key())
    with pytest.raises(LogKeyMismatch) as refused:
        pin_log_key(db_target, second.verifier_key())
    message = str(refused.value)
    assert f"{ORIGIN}+{first.key_id:08x}" in message
    assert f"{ORIGIN}+{second.key_id:08x}" in message
    assert _pinned_rows(db_target) == [(1, first.verifier_key())]  # the pin is unchanged


def test_the_same_key_under_another_origin_is_another_key(db_target: DatabaseTarget) -> None:
    key = Ed25519PrivateKey.generate()
    pin_log_key(db_target, NoteSigner(ORIGIN, key).verifier_key())
    with pytest.raises(LogKeyMismatch, match="elsewhere/log"):
        pin_log_key(db_target, NoteSigner("elsewhere/log", key).verifier_key())


async def test_the_store_checks_the_pin_when_it_opens(db_target: DatabaseTarget) -> None:
    """`create_app` opens its store with its key: the check holds without the command too."""
    first, second = _signer(), _signer()
    store = await PonyRecordStore.open(db_target, log_verifier_key=first.verifier_key())
    await store.close()
    assert _pinned_rows(db_target) == [(1, first.verifier_key())]
    with pytest.raises(LogKeyMismatch):
        await PonyRecordStore.open(db_target, log_verifier_key=second.verifier_key())
    store = await PonyRecordStore.open(db_target, log_verifier_key=first.verifier_key())
    await store.close()
    store = await PonyRecordStore.open(db_target)  # `reappraise` signs nothing: not checked
    await store.close()


def test_two_first_starts_at_once_pin_one_key(db_target: DatabaseTarget) -> None:
    _import_provider(db_target)
    signers = [_signer() for _ in range(4)]
    barrier = threading.Barrier(len(signers))
    outcomes: list[str | None] = [None] * len(signers)

    def start(n: int) -> None:
        barrier.wait()
        try:
            pin_log_key(db_target, signers[n].verifier_key())
            outcomes[n] = "pinned"
        except LogKeyMismatch as exc:
            outcomes[n] = exc.pinned

    threads = [threading.Thread(target=start, args=(n,)) for n in range(len(signers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes.count("pinned") == 1, outcomes
    winner = signers[outcomes.index("pinned")].verifier_key()
    assert all(outcome in ("pinned", winner) for outcome in outcomes), outcomes
    assert _pinned_rows(db_target) == [(1, winner)]


def test_a_replica_with_another_key_file_refuses_to_serve(
    db_target: DatabaseTarget, tmp_path: Path
) -> None:
    """Two replicas on one database, each with its own key file: the one started second exits
    1 with one line naming both keys' ids; a replica with the first one's key serves."""
    first = _key_file(tmp_path / "first.key", _signer())
    other = _key_file(tmp_path / "other.key", _signer())
    first_id = key_id(load_or_create_log_key(first, ORIGIN).verifier_key())
    other_id = key_id(load_or_create_log_key(other, ORIGIN).verifier_key())
    with registry_process(db_target, first) as (url, _):
        refused = _command(db_target, other)
        assert refused.returncode == 1
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        assert first_id in lines[0] and other_id in lines[0]
        assert lines[0].startswith("tdx-registry: error: the database pins the log key")
        with registry_process(db_target, first) as (same, _):  # the same key: serves
            one = httpx.get(f"{url}/log/public-key", timeout=5).text
            two = httpx.get(f"{same}/log/public-key", timeout=5).text
    assert one == two == load_or_create_log_key(first, ORIGIN).verifier_key()


def test_a_restart_on_a_new_disk_without_the_key_file_refuses_to_serve(
    db_target: DatabaseTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key file lost (a new disk): the registry creates a fresh key, then refuses it."""
    for disk in ("old-disk", "new-disk"):
        (tmp_path / disk).mkdir()
    with registry_process(db_target, tmp_path / "old-disk" / "log.key"):
        pass
    env = {"SKIP_TDX_AUTH": "1", "REGISTRY_ANY_MEASUREMENT": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr("tdx_registry.cli.run_app", _must_not_serve)
        status = main(["--log-key-path", str(tmp_path / "new-disk" / "log.key"),
                       "--log-origin", ORIGIN, *_database_args(db_target)])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err and "the database pins the log key" in err
    assert (tmp_path / "new-disk" / "log.key").exists()  # created, then refused


def test_an_unreachable_database_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pin is checked before serving: a database that does not answer ends the start with
    one line (the driver's multi-line message joined, no password), not a traceback."""
    key = _key_file(tmp_path / "log.key", _signer())
    url = f"postgresql://registry:secret-pw@127.0.0.1:{free_port()}/registry"
    with pytest.raises(LogKeyPinError, match="cannot pin the log key in the database"):
        pin_log_key(DatabaseTarget(postgres_url=url), _signer().verifier_key())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKIP_TDX_AUTH", "1")
        patch.setenv("REGISTRY_ANY_MEASUREMENT", "1")
        patch.setattr("tdx_registry.cli.run_app", _must_not_serve)
        status = main(["--db-url", url, "--log-key-path", str(key), "--log-origin", ORIGIN])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("tdx-registry: error: cannot pin the log key")
    assert "Traceback" not in err and "secret-pw" not in err


class ServedDespiteTheKey(AssertionError):
    """`main` went on to serve with a key the database does not pin."""


def _must_not_serve(*args: object, **kwargs: object) -> None:
    raise ServedDespiteTheKey("main() started serving with a key the database does not pin")


def test_stores_opening_at_once_on_an_empty_database_all_open(db_target: DatabaseTarget) -> None:
    """Replicas first starting at the same instant: each store creates the missing tables (Pony
    checks, then creates) and pins; every one opens, the same key pinned for all."""
    _import_provider(db_target)
    signer = _signer()
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    async def open_and_close() -> None:
        store = await PonyRecordStore.open(db_target, log_verifier_key=signer.verifier_key())
        await store.close()

    def start() -> None:
        barrier.wait()
        try:
            asyncio.run(open_and_close())
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert _pinned_rows(db_target) == [(1, signer.verifier_key())]
