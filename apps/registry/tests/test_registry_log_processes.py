"""The log across processes: kill -9 of a registry in the middle of a stream of registrations
leaves records and log consistent; two registry processes on one database (PostgreSQL, and
SQLite too) append one sequence; the log key file (refused when loose, corrupt, a directory,
or of another origin; created 0600 once and reused)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from log_helpers import check_log_invariants
from registry_helpers import Instance, Running
from test_registry_log import checkpoint_of

from tdx_merkle import NoteSigner
from tdx_registry import DatabaseTarget, PonyRecordStore
from tdx_registry.cli import main
from tdx_registry.log_key import LogKeyError, load_or_create_log_key

ORIGIN = "registry.test/log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _database_args(target: DatabaseTarget) -> list[str]:
    if target.postgres_url is not None:
        return ["--db-url", target.postgres_url]
    assert target.sqlite_path is not None
    return ["--db-path", str(target.sqlite_path)]


@contextlib.contextmanager
def registry_process(
    target: DatabaseTarget, key: Path
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A `tdx-registry` process (quotes only parsed) on `target`, until it answers."""
    port = free_port()
    env = {**os.environ, "SKIP_TDX_AUTH": "1", "REGISTRY_ANY_MEASUREMENT": "1"}
    argv = [sys.executable, "-c", "import sys; from tdx_registry.cli import main; sys.exit(main())",
            "serve", "--port", str(port), "--no-rate-limit", "--log-level", "WARNING",
            "--log-key-path", str(key), "--log-origin", ORIGIN,
            *_database_args(target)]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/log/checkpoint", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def _stream(
    url: str,
    instances: list[Instance],
    acknowledged: list[bytes],
    enough: tuple[int, asyncio.Event] | None = None,
) -> None:
    """Register `instances` one after the other (each twice: a new instance, then with an
    operator), until the registry goes away; set `enough`'s event once `acknowledged` holds
    that many."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        try:
            for instance in instances:
                for identities in ((), (Ed25519PrivateKey.generate(),)):
                    body = await instance.fresh(client, *identities)
                    response = await client.post("/register", json=body)
                    assert response.status_code == 200, response.text
                    acknowledged.append(instance.pubkey)
                    if enough is not None and len(acknowledged) >= enough[0]:
                        enough[1].set()
        except httpx.TransportError:
            return


async def test_kill_9_in_a_stream_of_registrations_leaves_log_and_records_consistent(
    db_target: DatabaseTarget, tmp_path: Path
) -> None:
    acknowledged: list[bytes] = []
    enough = asyncio.Event()
    with registry_process(db_target, tmp_path / "log.key") as (url, proc):
        writers = [
            asyncio.create_task(
                _stream(url, [Instance() for _ in range(40)], acknowledged, (24, enough))
            )
            for _ in range(4)
        ]
        await asyncio.wait_for(enough.wait(), timeout=60)
        proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*writers)
    store = await PonyRecordStore.open(db_target)
    try:
        log = await check_log_invariants(store)
        assert log.size >= len(acknowledged) >= 24
        for pubkey in acknowledged:  # acknowledged means committed, with its leaf
            assert log.log_index[pubkey.hex()] is not None
    finally:
        await store.close()


async def test_two_registry_processes_on_one_database_append_one_sequence(
    db_target: DatabaseTarget, tmp_path: Path
) -> None:
    target = db_target
    key = tmp_path / "log.key"
    acknowledged: list[bytes] = []
    with registry_process(target, key) as (one, _), registry_process(target, key) as (two, _):
        await asyncio.gather(
            *(
                _stream(url, [Instance() for _ in range(10)], acknowledged)
                for url in (one, two, one, two)
            )
        )
        async with httpx.AsyncClient(base_url=one) as a, httpx.AsyncClient(base_url=two) as b:
            checkpoints = [await checkpoint_of(a), await checkpoint_of(b)]
    assert len(acknowledged) == 80
    assert checkpoints[0] == checkpoints[1] and checkpoints[0].size == 80
    store = await PonyRecordStore.open(target)
    try:
        log = await check_log_invariants(store)
        assert log.size == 80
    finally:
        await store.close()


def _start(key: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    status = main(["--db-path", str(key.parent / "r.db"), "--log-key-path", str(key), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


class ServedDespiteTheKey(AssertionError):
    """`main` went on to serve: the key file was not refused."""


def _must_not_serve(*args: object, **kwargs: object) -> None:
    raise ServedDespiteTheKey("main() started serving instead of refusing the log key")


@pytest.fixture(autouse=True)
def _any_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quotes only parsed; and `main()` run in-process fails instead of serving forever if a
    key it should refuse were accepted."""
    monkeypatch.setenv("REGISTRY_ANY_MEASUREMENT", "1")
    monkeypatch.setenv("SKIP_TDX_AUTH", "1")
    monkeypatch.setattr("tdx_registry.cli.run_app", _must_not_serve)


def _key_text(origin: str = "tdx-registry/log") -> str:
    return NoteSigner(origin, Ed25519PrivateKey.generate()).signer_key() + "\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_key_others_may_access_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    key = tmp_path / "log.key"
    key.write_text(_key_text())
    key.chmod(mode)
    status, err = _start(key, capsys)
    assert status == 2
    assert str(key) in err and "group or others may access it" in err and f"{mode:04o}" in err


@pytest.mark.parametrize(
    "text",
    ["", "garbage\n", "PRIVATE+KEY+tdx-registry/log+00000000+AAAA\n", _key_text()[:-8] + "\n"],
)
def test_a_corrupt_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    key = tmp_path / "log.key"
    key.write_text(text)
    key.chmod(0o600)
    status, err = _start(key, capsys)
    assert status == 2
    assert str(key) in err and "is not a note signer key" in err


def test_a_key_of_another_origin_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "log.key"
    key.write_text(_key_text("elsewhere/log"))
    key.chmod(0o600)
    status, err = _start(key, capsys)
    assert status == 2
    assert "'elsewhere/log'" in err and "'tdx-registry/log'" in err


def test_a_directory_as_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "log.key"
    key.mkdir(mode=0o700)
    status, err = _start(key, capsys)
    assert status == 2
    assert str(key) in err and "is not a regular file" in err


def test_a_refused_key_exits_2_from_the_command(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    key.write_text(_key_text())
    key.chmod(0o644)
    env = {**os.environ, "REGISTRY_ANY_MEASUREMENT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from tdx_registry.cli import main; sys.exit(main())",
         "--db-path", str(tmp_path / "r.db"), "--log-key-path", str(key)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "group or others may access it" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_key_is_created_0600_once_and_reused(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    created = load_or_create_log_key(key, ORIGIN)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.key"]  # no temporary file left
    again = load_or_create_log_key(key, ORIGIN)
    assert again.verifier_key() == created.verifier_key()
    assert key.read_text() == created.signer_key() + "\n"
    with pytest.raises(LogKeyError, match="names the key"):
        load_or_create_log_key(key, "other/log")


async def test_the_serving_registry_creates_its_key_and_keeps_it(running: Running) -> None:
    async with running() as client:
        first = (await client.get("/log/public-key")).text
    async with running() as client:
        second = (await client.get("/log/public-key")).text
    assert first == second and first.startswith("tdx-registry/log+")


def test_a_temporary_file_left_by_a_crash_does_not_block_the_key_creation(
    tmp_path: Path,
) -> None:
    """A start killed between writing the temporary key file and linking it leaves the file;
    a later start with the same pid (pid 1 in every container start) still creates the key."""
    key = tmp_path / "log.key"
    stale = tmp_path / f".log.key.{os.getpid()}.tmp"
    stale.write_text(_key_text(ORIGIN))
    stale.chmod(0o600)
    created = load_or_create_log_key(key, ORIGIN)
    assert key.read_text() == created.signer_key() + "\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name, "log.key"]
