"""The real OpenSSH client with the pinned host key, against a local asyncssh server: a
server presenting another host key is refused before any authentication; with the pinned
key the command runs and its exit status is ssh's."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tdxctl_support import host_key_line

from tdxctl import SshError, known_hosts_line, run_pinned_ssh, ssh_argv


@dataclass
class Seen:
    """What the server saw: connections, and every authentication attempt."""

    connections: int = 0
    auth_attempts: list[str] = field(default_factory=list)


def _asyncssh_key(key: Ed25519PrivateKey) -> Any:
    return asyncssh.import_private_key(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )


@dataclass
class Server:
    port: int
    seen: Seen


@pytest.fixture
def owner() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def server_with(owner: Ed25519PrivateKey) -> AsyncIterator[Any]:
    """`await server_with(host_key)`: an SSH server on loopback presenting `host_key`,
    accepting only `owner`'s key, answering `exec` with the command and exit status 7."""
    servers: list[Any] = []
    owner_public = _asyncssh_key(owner).convert_to_public()

    async def start(host_key: Ed25519PrivateKey) -> Server:
        seen = Seen()

        class Handler(asyncssh.SSHServer):
            def connection_made(self, conn: Any) -> None:
                seen.connections += 1

            def begin_auth(self, username: str) -> bool:
                seen.auth_attempts.append(f"begin {username}")
                return True

            def password_auth_supported(self) -> bool:
                return False

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: Any) -> bool:
                seen.auth_attempts.append(f"publickey {username}")
                return bool(key.public_data == owner_public.public_data)

        async def process(proc: Any) -> None:
            proc.stdout.write(f"ran: {proc.command}\n")
            proc.exit(7)

        server = await asyncssh.create_server(
            Handler,
            "127.0.0.1",
            0,
            server_host_keys=[_asyncssh_key(host_key)],
            process_factory=process,
        )
        servers.append(server)
        return Server(port=server.sockets[0].getsockname()[1], seen=seen)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _ssh(port: int, pinned: str, owner: Ed25519PrivateKey) -> int:
    return await asyncio.to_thread(
        run_pinned_ssh,
        host="127.0.0.1",
        port=port,
        host_key=pinned,
        key=owner,
        command=("echo", "hello"),
        stdin=subprocess.DEVNULL,
    )


async def test_a_server_presenting_another_host_key_is_refused_before_authentication(
    server_with: Any, owner: Ed25519PrivateKey, capfd: pytest.CaptureFixture[str]
) -> None:
    attested = Ed25519PrivateKey.generate()
    impostor: Server = await server_with(Ed25519PrivateKey.generate())
    status = await _ssh(impostor.port, host_key_line(attested), owner)
    out, err = capfd.readouterr()
    assert status == 255
    assert "Host key verification failed" in err
    assert "ran:" not in out
    assert impostor.seen.connections == 1
    assert impostor.seen.auth_attempts == []


async def test_with_the_pinned_host_key_the_owner_gets_through(
    server_with: Any, owner: Ed25519PrivateKey, capfd: pytest.CaptureFixture[str]
) -> None:
    attested = Ed25519PrivateKey.generate()
    genuine: Server = await server_with(attested)
    status = await _ssh(genuine.port, host_key_line(attested), owner)
    out, _ = capfd.readouterr()
    assert status == 7
    assert "ran: echo hello" in out
    assert "publickey owner" in genuine.seen.auth_attempts


async def test_another_client_key_is_refused_by_the_server(
    server_with: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    attested = Ed25519PrivateKey.generate()
    genuine: Server = await server_with(attested)
    status = await _ssh(genuine.port, host_key_line(attested), Ed25519PrivateKey.generate())
    out, _ = capfd.readouterr()
    assert status == 255
    assert "ran:" not in out


def test_the_temporary_files_are_private_and_removed(
    tmp_path: Path, owner: Ed25519PrivateKey
) -> None:
    """A program run in place of `ssh` records the modes and contents it is given; afterwards
    nothing remains."""
    record = tmp_path / "seen"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in UserKnownHostsFile=*) k="${a#*=}";; '
        'IdentityFile=*) i="${a#*=}";; esac; done\n'
        f'stat -c "%a" "$(dirname "$k")" "$k" "$i" > {record}\n'
        f'cat "$k" >> {record}\n'
        f'head -1 "$i" >> {record}\n'
        'echo "$k" >> ' + str(record) + "\n"
        "exit 3\n"
    )
    fake.chmod(0o755)
    line = host_key_line(Ed25519PrivateKey.generate())
    status = run_pinned_ssh(
        host="10.0.0.5",
        port=2222,
        host_key=line,
        key=owner,
        ssh_program=str(fake),
        stdin=subprocess.DEVNULL,
    )
    assert status == 3
    modes_dir, mode_known, mode_id, known, id_head, known_path = record.read_text().splitlines()
    assert (modes_dir, mode_known, mode_id) == ("700", "600", "600")
    assert known == f"[10.0.0.5]:2222 {line}"
    assert id_head == "-----BEGIN OPENSSH PRIVATE KEY-----"
    assert not Path(known_path).parent.exists()


def test_the_ssh_command_line_pins_the_key_and_ignores_every_other_source() -> None:
    argv = ssh_argv(
        ssh_program="ssh",
        host="h",
        port=2222,
        user="owner",
        known_hosts=Path("/t/known_hosts"),
        identity_file=Path("/t/id"),
        batch=True,
        command=("ls", "-l"),
    )
    options = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/t/known_hosts",
        "GlobalKnownHostsFile=/dev/null",
        "HostKeyAlgorithms=ssh-ed25519",
        "IdentitiesOnly=yes",
        "IdentityFile=/t/id",
        "BatchMode=yes",
    } <= options
    assert argv[1:3] == ["-F", "/dev/null"]
    assert argv[-4:] == ["--", "owner@h", "ls", "-l"]


def test_a_bad_host_key_line_or_host_is_refused() -> None:
    line = host_key_line(Ed25519PrivateKey.generate())
    with pytest.raises(SshError):
        known_hosts_line("h", 22, "ssh-rsa AAAA")
    for host in ("", "a b", "h,evil", "*", "h\n[evil]:22"):
        with pytest.raises(SshError):
            known_hosts_line(host, 22, line)
    assert known_hosts_line("::1", 2222, line) == f"[::1]:2222 {line}\n"
