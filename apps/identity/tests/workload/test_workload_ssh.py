"""SSH setup access: owner-only auth, shells and exec inside the container, and close()."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_identity.exceptions import SshServerError
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.runtime import PodmanRuntime
from tdx_identity.workload.ssh import HostKey, SetupSshServer, container_exec_factory

from .conftest import _remove_labelled, container_name, require_program


def _write_openssh_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture(scope="module")
def running_container(session_tag: str, workload_image: str) -> Iterator[tuple[PodmanRuntime, str]]:
    """One container for the whole module: every SSH session execs into it."""
    require_program("podman")
    runtime = PodmanRuntime(label_value=session_tag, stop_timeout=1)
    name = container_name()
    config = WorkloadConfig(image=workload_image, persist_dirs=(), port=8080)
    asyncio.run(runtime.recreate(name, config, {}, None))
    try:
        yield runtime, name
    finally:
        asyncio.run(runtime.remove(name))
        _remove_labelled("podman", session_tag)


@pytest.fixture(scope="module")
def owner_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    return key, _write_openssh_key(tmp_path_factory.mktemp("owner") / "id_ed25519", key)


@pytest.fixture
async def server(
    running_container: tuple[PodmanRuntime, str],
    owner_key: tuple[Ed25519PrivateKey, Path],
    tmp_path: Path,
) -> AsyncIterator[SetupSshServer]:
    runtime, name = running_container
    srv = SetupSshServer(
        host="127.0.0.1",
        port=0,
        host_key=HostKey.generate(),
        owner_pubkey=_raw_public(owner_key[0]),
        exec_argv_factory=container_exec_factory(runtime, name),
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def _connect(port: int, key_file: Path, username: str = "owner") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username=username,
        key_filename=str(key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _exec(
    port: int, key_file: Path, command: str, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    client = _connect(port, key_file)
    try:
        chan = client.get_transport().open_session()
        chan.settimeout(20)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out = chan.makefile("rb").read()
        err = chan.makefile_stderr("rb").read()
        return chan.recv_exit_status(), out, err
    finally:
        client.close()


def _read_until(chan: paramiko.Channel, marker: bytes, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen; got {data!r}")
        if chan.recv_ready():
            data += chan.recv(65536)
        elif chan.closed or chan.exit_status_ready():
            data += chan.recv(65536)
            if marker not in data:
                raise AssertionError(f"channel closed before {marker!r}; got {data!r}")
        else:
            time.sleep(0.02)
    return data


async def test_exec_returns_output_and_exit_status(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    status, out, err = await asyncio.to_thread(
        _exec, server.port, owner_key[1], "echo hello; echo oops >&2; hostname >/dev/null; exit 7"
    )
    assert (status, out, err) == (7, b"hello\n", b"oops\n")


async def test_exec_forwards_stdin_until_eof(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    payload = bytes(range(256)) * 64
    status, out, _ = await asyncio.to_thread(_exec, server.port, owner_key[1], "cat", payload)
    assert status == 0
    assert out == payload


async def test_shell_without_pty_reads_commands_from_stdin(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    def run() -> tuple[int, bytes]:
        client = _connect(server.port, owner_key[1])
        try:
            chan = client.get_transport().open_session()
            chan.settimeout(20)
            chan.invoke_shell()  # Channel.invoke_shell requests no pty (SSHClient's does)
            chan.sendall(b"echo in-shell; [ -t 0 ] && echo tty || echo notty; exit 3\n")
            chan.shutdown_write()
            return chan.recv_exit_status(), chan.makefile("rb").read()
        finally:
            client.close()

    status, out = await asyncio.to_thread(run)
    assert status == 3
    assert out == b"in-shell\nnotty\n"


async def test_interactive_shell_with_pty_follows_window_size(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    def run() -> tuple[bytes, bytes, int]:
        client = _connect(server.port, owner_key[1])
        try:
            chan = client.invoke_shell(term="xterm", width=91, height=27)
            chan.settimeout(20)
            chan.sendall(b"[ -t 0 ] && echo TTY-$TERM; stty size | sed 's/ /x/'\n")
            first = _read_until(chan, b"27x91")
            chan.resize_pty(width=132, height=43)
            time.sleep(0.3)
            chan.sendall(b"stty size | sed 's/ /x/'\n")
            second = _read_until(chan, b"43x132")
            chan.sendall(b"exit 5\n")
            return first, second, chan.recv_exit_status()
        finally:
            client.close()

    first, second, status = await asyncio.to_thread(run)
    assert b"TTY-xterm" in first
    assert b"27x91" in first
    assert b"43x132" in second
    assert status == 5


async def test_another_key_is_refused(server: SetupSshServer, tmp_path: Path) -> None:
    stranger = _write_openssh_key(tmp_path / "stranger", Ed25519PrivateKey.generate())
    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(_connect, server.port, stranger)


async def test_password_is_refused(server: SetupSshServer) -> None:
    def attempt() -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                "127.0.0.1",
                port=server.port,
                username="root",
                password="root",
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
        finally:
            client.close()

    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(attempt)


async def test_only_public_key_auth_is_offered(server: SetupSshServer) -> None:
    def allowed_types() -> list[str]:
        sock = socket.create_connection(("127.0.0.1", server.port), 10)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            try:
                transport.auth_none("root")
            except paramiko.BadAuthenticationType as exc:
                return list(exc.allowed_types)
            raise AssertionError("authentication 'none' was accepted")
        finally:
            transport.close()

    assert await asyncio.to_thread(allowed_types) == ["publickey"]


async def test_forwarding_and_sftp_are_refused(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    def attempt() -> tuple[bool, bool]:
        client = _connect(server.port, owner_key[1])
        try:
            transport = client.get_transport()
            assert transport is not None
            try:
                transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
                forwarded = True
            except paramiko.ChannelException:
                forwarded = False
            try:
                paramiko.SFTPClient.from_transport(transport)
                sftp = True
            except (paramiko.SSHException, EOFError):
                sftp = False
            return forwarded, sftp
        finally:
            client.close()

    assert await asyncio.to_thread(attempt) == (False, False)


async def test_close_ends_live_sessions_and_stops_listening(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    port = server.port

    def open_busy_shell() -> tuple[paramiko.SSHClient, paramiko.Channel]:
        client = _connect(port, owner_key[1])
        chan = client.invoke_shell()
        chan.settimeout(20)
        chan.sendall(b"echo ready; sleep 600\n")
        _read_until(chan, b"ready")
        return client, chan

    def wait_ended(client: paramiko.SSHClient, chan: paramiko.Channel) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if chan.closed or not client.get_transport().is_active():
                return True
            time.sleep(0.05)
        return False

    client, chan = await asyncio.to_thread(open_busy_shell)
    try:
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 10
        assert await asyncio.to_thread(wait_ended, client, chan)
    finally:
        await asyncio.to_thread(client.close)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    assert not server.is_serving


async def test_openssh_client_exec_with_pinned_host_key(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path], tmp_path: Path
) -> None:
    ssh = require_program("ssh")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {server.host_public_key()}\n")
    argv = [
        ssh,
        "-F",
        "/dev/null",
        "-p",
        str(server.port),
        "-i",
        str(owner_key[1]),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "anyone@127.0.0.1",
        "read line; echo got-$line; exit 4",
    ]
    done = await asyncio.to_thread(
        subprocess.run, argv, input=b"piped\n", capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 4, done.stderr
    assert done.stdout == b"got-piped\n"


async def test_openssh_client_with_forced_tty_and_no_host_key_check(
    server: SetupSshServer, owner_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    ssh = require_program("ssh")
    argv = [
        ssh,
        "-F",
        "/dev/null",
        "-tt",
        "-p",
        str(server.port),
        "-i",
        str(owner_key[1]),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "owner@127.0.0.1",
        "[ -t 1 ] && echo on-a-tty; exit 6",
    ]
    done = await asyncio.to_thread(
        subprocess.run, argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 6, done.stderr
    assert b"on-a-tty" in done.stdout


def test_host_keys_are_made_in_memory_each_new_and_ed25519_only(tmp_path: Path) -> None:
    first, second = HostKey.generate(), HostKey.generate()
    assert first.openssh_public() != second.openssh_public()
    assert first.openssh_public().startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")
    assert len(first.openssh_public().split()) == 2, "no comment: the measured line"
    assert first.fingerprint().startswith("SHA256:")
    with pytest.raises(SshServerError, match="ed25519"):
        HostKey(asyncssh.generate_private_key("ecdsa-sha2-nistp256"))
