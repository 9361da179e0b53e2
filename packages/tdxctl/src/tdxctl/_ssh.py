"""Run the real OpenSSH client with one pinned host key: a temporary known_hosts holding only
the attested key, strict checking, no other source of host keys or identities, so a server
presenting any other key is refused before authentication."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_measure import EventLogError, SshHostKeyEvent
from tdxctl._errors import SshError
from tdxctl._keys import write_private_file

__all__ = ["DEFAULT_SSH_PORT", "known_hosts_line", "run_pinned_ssh", "ssh_argv"]

DEFAULT_SSH_PORT = 2222


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """`[host]:port ssh-ed25519 AAAA...`: the one line of the temporary known_hosts."""
    try:
        SshHostKeyEvent(public_key=host_key)
    except EventLogError:
        raise SshError("the pinned host key is not an ssh-ed25519 public key line") from None
    if not host or any(c in host for c in " \t\r\n,[]*?!#@") or not host.isprintable():
        raise SshError(f"cannot pin a host key for the host {host!r}")
    return f"[{host}]:{port} {host_key}\n"


def ssh_argv(
    *,
    ssh_program: str,
    host: str,
    port: int,
    user: str,
    known_hosts: Path,
    identity_file: Path,
    batch: bool,
    command: Sequence[str],
) -> list[str]:
    """The OpenSSH command line: no configuration file, only `known_hosts`, strict checking,
    ed25519 host keys only, only `identity_file` offered."""
    options = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlgorithms": "ssh-ed25519",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "VerifyHostKeyDNS": "no",
        "IdentitiesOnly": "yes",
        "IdentityFile": str(identity_file),
        "IdentityAgent": "none",
        "PreferredAuthentications": "publickey",
        "ControlMaster": "no",
        "ControlPath": "none",
        "BatchMode": "yes" if batch else "no",
    }
    argv = [ssh_program, "-F", "/dev/null", "-p", str(port)]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, "--", f"{user}@{host}", *command]


def run_pinned_ssh(
    *,
    host: str,
    port: int,
    host_key: str,
    key: Ed25519PrivateKey,
    command: Sequence[str] = (),
    user: str = "owner",
    ssh_program: str = "ssh",
    batch: bool | None = None,
    stdin: int | None = None,
) -> int:
    """Run OpenSSH to `user@host:port` trusting only `host_key`, authenticating with `key`
    (written in OpenSSH form, mode 0600, in a 0700 temporary directory removed afterwards);
    return ssh's exit status (128 + N when killed by signal N). `batch` defaults to
    BatchMode when stdin is not a terminal; `stdin` (a file descriptor or
    `subprocess.DEVNULL`) replaces the inherited one."""
    line = known_hosts_line(host, port, host_key)
    program = shutil.which(ssh_program)
    if program is None:
        raise SshError(f"the OpenSSH client {ssh_program!r} is not installed or not on PATH")
    if batch is None:
        batch = not sys.stdin.isatty()
    directory = Path(tempfile.mkdtemp(prefix="tdxctl-ssh-"))
    try:
        directory.chmod(0o700)
        known_hosts = directory / "known_hosts"
        identity_file = directory / "id_ed25519"
        write_private_file(known_hosts, line.encode("ascii"))
        write_private_file(
            identity_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
        argv = ssh_argv(
            ssh_program=program,
            host=host,
            port=port,
            user=user,
            known_hosts=known_hosts,
            identity_file=identity_file,
            batch=batch,
            command=command,
        )
        try:
            done = subprocess.run(argv, stdin=stdin, check=False)  # noqa: S603 (argv built above)
        except OSError as exc:
            raise SshError(f"cannot run {program}: {exc.strerror}") from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if done.returncode < 0:
        return 128 - done.returncode
    return done.returncode
