"""SSH setup access to the workload container, open between configure and expose.

Only the owner's ed25519 key authenticates (any user name); passwords, keyboard-interactive,
host-based and GSS authentication are not offered, agent/X11/port forwarding, SFTP and SCP
are off. Every session runs one program (from `exec_argv_factory`, normally `podman exec`
into the container): a shell with or without a pty, or one command whose exit status is
returned. `close()` stops the listener and ends every live session and connection; programs
a session left running inside the container (`podman exec` cannot kill them) end when the
container is recreated, which expose does right after closing SSH.

Connections that have not authenticated yet cannot lock the owner out: each client IP holds
at most `max_unauthenticated_per_client` of them, and a new connection is never refused for
idle ones. When its client is at that cap, its own oldest unauthenticated connection is
closed; when every slot is taken, the oldest unauthenticated connection of the client holding
the most is closed. Only authenticated connections (the owner's) are never closed for a new
one, so a connection is refused only when all `max_connections` slots are the owner's. The
login grace (`login_timeout`) is short, 10 s by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hmac
import logging
import os
import re
import signal
import struct
import termios
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.utils import CryptographyDeprecationWarning

from tdx_identity.exceptions import SshServerError

from .runtime import ContainerRuntime

with warnings.catch_warnings():
    # asyncssh names cryptography's DSA key types at import, which cryptography 51 deprecates
    # with a warning on stderr each start; this server makes and accepts ed25519 keys only.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

__all__ = [
    "ExecArgvFactory",
    "HostKey",
    "SessionRequest",
    "SetupSshServer",
    "SshServerError",
    "container_exec_factory",
    "owner_key_blob",
]

_log = logging.getLogger(__name__)

_CHUNK: Final = 65536
_TERM_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", re.ASCII)
_DRAIN_AFTER_EXIT: Final = 2.0
_KILL_GRACE: Final = 3.0
_EVICTION_LOG_SECONDS: Final = 10.0
DEFAULT_LOGIN_TIMEOUT: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 8
DEFAULT_MAX_UNAUTHENTICATED_PER_CLIENT: Final = 2


@dataclass(frozen=True)
class SessionRequest:
    """What a client asked for: `command` None means a shell; `term_type` is set with a pty."""

    command: str | None
    pty: bool
    term_type: str | None


ExecArgvFactory = Callable[[SessionRequest], Sequence[str]]


def container_exec_factory(
    runtime: ContainerRuntime, container_name: str, shell: str = "/bin/sh"
) -> ExecArgvFactory:
    """Sessions run in `container_name`: a shell, or `shell -c <command>` for exec requests."""

    def factory(request: SessionRequest) -> Sequence[str]:
        argv = [shell] if request.command is None else [shell, "-c", request.command]
        env = {}
        if request.term_type is not None and _TERM_RE.fullmatch(request.term_type):
            env["TERM"] = request.term_type
        return runtime.exec_argv(container_name, argv, tty=request.pty, env=env)

    return factory


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def owner_key_blob(owner_pubkey: bytes) -> bytes:
    """The SSH wire form of a raw 32-byte ed25519 public key (what clients present)."""
    if len(owner_pubkey) != 32:
        raise SshServerError("owner public key must be 32 raw ed25519 bytes")
    return _ssh_string(b"ssh-ed25519") + _ssh_string(owner_pubkey)


class HostKey:
    """The server's ed25519 host key, made in process memory at every service start and never
    written to any file: the host, which can read every disk of the TD, never sees it. The
    attested copy of its public half is the RTMR3 ``ssh_host_key`` event."""

    def __init__(self, key: asyncssh.SSHKey) -> None:
        if key.algorithm != b"ssh-ed25519":
            raise SshServerError("the SSH host key must be an ed25519 key")
        self._key = key

    @classmethod
    def generate(cls) -> HostKey:
        """A fresh ed25519 key, held in memory only."""
        return cls(asyncssh.generate_private_key("ssh-ed25519"))

    @property
    def private_key(self) -> asyncssh.SSHKey:
        return self._key

    def openssh_public(self) -> str:
        """`ssh-ed25519 AAAA...` without a comment: the line an owner pins (after the host),
        and the one the ``ssh_host_key`` event carries."""
        parts = self._key.export_public_key("openssh").decode("ascii").split()
        return f"{parts[0]} {parts[1]}"

    def fingerprint(self) -> str:
        """`SHA256:...`, as OpenSSH prints it."""
        return str(self._key.get_fingerprint("sha256"))


class _OwnerOnlyServer(asyncssh.SSHServer):
    """Per-connection policy: public-key auth with the owner's ed25519 key, nothing else."""

    def __init__(self, owner: SetupSshServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        if not self._owner._admit(conn):
            conn.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._forget(self._conn)

    def auth_completed(self) -> None:
        if self._conn is not None:
            self._owner._authenticated(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if key.algorithm != b"ssh-ed25519":
            return False
        return hmac.compare_digest(bytes(key.public_data), self._owner._owner_blob)


class SetupSshServer:
    """The owner's SSH entry into the workload container, until `close()`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        host_key: HostKey,
        owner_pubkey: bytes,
        exec_argv_factory: ExecArgvFactory,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_unauthenticated_per_client: int = DEFAULT_MAX_UNAUTHENTICATED_PER_CLIENT,
    ) -> None:
        if max_connections < 1 or max_unauthenticated_per_client < 1 or login_timeout <= 0:
            raise SshServerError(
                "max_connections and max_unauthenticated_per_client must be at least 1 and "
                "login_timeout positive"
            )
        self._host = host
        self._port = port
        self._host_key = host_key
        self._owner_blob = owner_key_blob(owner_pubkey)
        self._factory = exec_argv_factory
        self._login_timeout = login_timeout
        self._max_connections = max_connections
        self._max_unauthenticated_per_client = max_unauthenticated_per_client
        # Unauthenticated connections, oldest first, with their client IP.
        self._unauthenticated: dict[asyncssh.SSHServerConnection, str] = {}
        self._evicted = 0
        self._evictions_logged_at: float | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._children: set[asyncio.subprocess.Process] = set()
        self._sessions: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, presenting the in-memory host key."""
        if self._acceptor is not None:
            raise SshServerError("SSH setup server already started")
        self._closing = False
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _OwnerOnlyServer(self),
                self._host,
                self._port,
                server_host_keys=[self._host_key.private_key],
                process_factory=self._run_session,
                encoding=None,
                line_editor=False,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                password_auth=False,
                kbdint_auth=False,
                gss_host=None,
                host_based_auth=False,
                public_key_auth=True,
                login_timeout=self._login_timeout,
                reuse_address=True,
            )
        except OSError as exc:
            raise SshServerError(
                f"cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._acceptor is None:
            raise SshServerError("SSH setup server not started")
        return int(self._acceptor.get_port())

    @property
    def is_serving(self) -> bool:
        return self._acceptor is not None

    def host_key(self) -> HostKey:
        return self._host_key

    def host_public_key(self) -> str:
        return self.host_key().openssh_public()

    def host_key_fingerprint(self) -> str:
        return self.host_key().fingerprint()

    async def close(self) -> None:
        """Stop listening, end every live session and connection, and wait until all is gone."""
        self._closing = True
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
        for child in list(self._children):
            _signal(child, signal.SIGTERM)
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in connections), return_exceptions=True)
        if self._sessions:
            _, pending = await asyncio.wait(list(self._sessions), timeout=_KILL_GRACE + 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for child in list(self._children):
            _signal(child, signal.SIGKILL)
        if acceptor is not None:
            await acceptor.wait_closed()

    @property
    def evicted(self) -> int:
        """Unauthenticated connections closed to make room for newer ones, since start."""
        return self._evicted

    def _admit(self, conn: asyncssh.SSHServerConnection) -> bool:
        if self._closing:
            return False
        client = _client_of(conn)
        same = [c for c, source in self._unauthenticated.items() if source == client]
        if len(same) >= self._max_unauthenticated_per_client:
            self._evict(same[0], client)
        if len(self._connections) >= self._max_connections:
            victim = self._oldest_of_busiest_client()
            if victim is None:
                return False  # every slot is an authenticated connection
            self._evict(*victim)
        self._connections.add(conn)
        self._unauthenticated[conn] = client
        return True

    def _oldest_of_busiest_client(self) -> tuple[asyncssh.SSHServerConnection, str] | None:
        held: dict[str, int] = {}
        for source in self._unauthenticated.values():
            held[source] = held.get(source, 0) + 1
        if not held:
            return None
        most = max(held.values())
        for conn, source in self._unauthenticated.items():  # oldest first
            if held[source] == most:
                return conn, source
        return None

    def _evict(self, conn: asyncssh.SSHServerConnection, client: str) -> None:
        self._forget(conn)
        self._evicted += 1
        now = asyncio.get_running_loop().time()
        if (
            self._evictions_logged_at is None
            or now - self._evictions_logged_at >= _EVICTION_LOG_SECONDS
        ):
            _log.warning(
                "SSH setup: closing an unauthenticated connection for a newer one",
                extra={"client": client, "evicted_total": self._evicted},
            )
            self._evictions_logged_at = now
        conn.close()

    def _authenticated(self, conn: asyncssh.SSHServerConnection) -> None:
        self._unauthenticated.pop(conn, None)

    def _forget(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connections.discard(conn)
        self._unauthenticated.pop(conn, None)

    # -- sessions ----------------------------------------------------------------------------

    async def _run_session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            if process.subsystem is not None:
                process.stderr.write(b"subsystems are not available\r\n")
                process.exit(1)
                return
            request = SessionRequest(
                command=process.command,
                pty=process.term_type is not None,
                term_type=process.term_type,
            )
            try:
                argv = list(self._factory(request))
            except ValueError as exc:
                process.stderr.write(f"session refused: {exc}\r\n".encode())
                process.exit(1)
                return
            if request.pty:
                status = await self._bridge_pty(process, argv)
            else:
                status = await self._bridge_pipes(process, argv)
            with contextlib.suppress(OSError, asyncssh.Error):
                process.exit(status)
        except Exception:
            _log.exception("SSH setup session failed")
            with contextlib.suppress(Exception):
                process.exit(255)
        finally:
            self._sessions.discard(task)

    async def _spawn(self, argv: Sequence[str], **kwargs: object) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
        self._children.add(proc)
        return proc

    async def _bridge_pipes(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]
    ) -> int:
        try:
            proc = await self._spawn(
                argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            process.stderr.write(f"cannot start session: {exc.strerror}\r\n".encode())
            return 255
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            feed = asyncio.create_task(_feed_stdin(process, proc.stdin))
            outputs = asyncio.gather(
                _copy_out(proc.stdout, process.stdout), _copy_out(proc.stderr, process.stderr)
            )
            return await self._await_exit(process, proc, outputs, feed)
        finally:
            self._children.discard(proc)

    async def _bridge_pty(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
        master, slave = os.openpty()
        try:
            width, height, pixwidth, pixheight = process.term_size
            _set_winsize(slave, width, height, pixwidth, pixheight)
            proc = await self._spawn(argv, stdin=slave, stdout=slave, stderr=slave)
        except OSError as exc:
            os.close(master)
            process.stderr.write(f"cannot start session: {exc.strerror}\r\n".encode())
            return 255
        finally:
            os.close(slave)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            os.fdopen(master, "rb", buffering=0),
        )
        write_fd = os.dup(master)
        write_transport, write_protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
        try:
            feed = asyncio.create_task(_feed_pty(process, writer, write_fd, proc))
            outputs = asyncio.gather(_copy_out(reader, process.stdout))
            return await self._await_exit(process, proc, outputs, feed)
        finally:
            self._children.discard(proc)
            read_transport.close()
            write_transport.close()

    async def _await_exit(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        proc: asyncio.subprocess.Process,
        outputs: asyncio.Future[Any],
        feed: asyncio.Task[None],
    ) -> int:
        """Wait for the program; end it if the channel closes first; then flush its output."""
        exited = asyncio.create_task(proc.wait())
        channel_closed = asyncio.create_task(process.channel.wait_closed())
        try:
            await asyncio.wait({exited, channel_closed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await _terminate(proc)
            returncode = await exited
            # Output still buffered in pipes or the pty is flushed; a grandchild that kept the
            # descriptors open does not hold the session forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(outputs), _DRAIN_AFTER_EXIT)
        finally:
            for task in (feed, channel_closed):
                task.cancel()
            outputs.cancel()
            await asyncio.gather(feed, channel_closed, outputs, return_exceptions=True)
        return returncode if returncode >= 0 else 128 - returncode


async def _feed_stdin(
    process: asyncssh.SSHServerProcess[bytes], stdin: asyncio.StreamWriter
) -> None:
    """Client input to the program; client EOF closes the program's stdin."""
    try:
        while True:
            try:
                data = await process.stdin.read(_CHUNK)
            except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
        pass
    finally:
        stdin.close()
        with contextlib.suppress(Exception):
            await stdin.wait_closed()


async def _feed_pty(
    process: asyncssh.SSHServerProcess[bytes],
    master: asyncio.StreamWriter,
    master_fd: int,
    proc: asyncio.subprocess.Process,
) -> None:
    """Client input to the pty; window-size changes resize it and tell the program."""
    try:
        while True:
            try:
                data = await process.stdin.read(_CHUNK)
            except asyncssh.TerminalSizeChanged as change:
                _set_winsize(
                    master_fd, change.width, change.height, change.pixwidth, change.pixheight
                )
                _signal(proc, signal.SIGWINCH)
                continue
            except asyncssh.BreakReceived:
                master.write(b"\x03")
                continue
            except asyncssh.SignalReceived:
                continue
            if not data:
                # A pty has no half-close; the client's EOF simply ends its input.
                return
            master.write(data)
            await master.drain()
    except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
        pass
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise


async def _copy_out(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    """Program output to the client until EOF (EIO on a pty master means the pty closed)."""
    while True:
        try:
            data = await source.read(_CHUNK)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not data:
            return
        try:
            sink.write(data)
            await sink.drain()
        except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
            return


def _client_of(conn: asyncssh.SSHServerConnection) -> str:
    peer = conn.get_extra_info("peername")
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return "unknown"


def _set_winsize(fd: int, width: int, height: int, pixwidth: int, pixheight: int) -> None:
    if width <= 0 or height <= 0:
        return
    size = struct.pack(
        "HHHH", min(height, 0xFFFF), min(width, 0xFFFF), pixwidth & 0xFFFF, pixheight & 0xFFFF
    )
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    _signal(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), _KILL_GRACE)
    except TimeoutError:
        _signal(proc, signal.SIGKILL)
