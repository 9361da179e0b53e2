"""The attested-TLS front of the exposed workload: nginx, configured, started, supervised and
stopped by the identity service.

After expose the container is published on ``127.0.0.1:<internal port>`` only; nginx listens on
``WORKLOAD_PUBLISH_HOST`` at ``WORKLOAD_PORT`` (plain HTTP, unless turned off) and at
``WORKLOAD_TLS_PORT`` (TLS 1.2/1.3 with the attested certificate), proxies both to the container
and adds ``x-instance-pubkey: <hex>`` to every response (``always``: error pages too; a header
of that name from the container is dropped, so the workload cannot claim another instance).

Memory only. The TLS key (`TlsKey`, EC P-256) is made in process memory at every start. The
key, its certificate and everything nginx writes (its configuration, pid file, temp paths) live
in one private directory (`FrontRuntimeDir`: 0700, owned by this process's user, not a symlink,
on a tmpfs or ramfs checked with statfs), never under STORAGE_PATH; the service refuses to start
otherwise (`FrontRuntimeDirError`). nginx is told not to spill bodies to temp files
(``proxy_request_buffering off``, ``proxy_max_temp_file_size 0``). The files and the directory
are removed at shutdown; a reboot clears the tmpfs anyway.

No other configuration. nginx runs as ``nginx -p <dir> -c <dir>/nginx.conf -e stderr`` with
``daemon off`` and ``master_process on``: no file of the distribution's /etc/nginx is read,
and its error log goes to the service's stderr.

Supervision. nginx runs in its own process group (a new session), and with the parent-death
signal SIGTERM, so a killed identity service takes its front with it. When nginx exits while
it should serve (e.g. SIGKILL), what is left of its group (workers that outlive a killed master
hold the listening sockets) is killed, and it is started again with a bounded back-off,
logged each time. `stop` sends SIGQUIT (graceful: in-flight requests finish), then SIGTERM,
then SIGKILL after `stop_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import datetime
import enum
import hashlib
import ipaddress
import logging
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_attested_tls import (
    AttestedTlsError,
    build_certificate,
    claims_for,
    report_data_for,
)
from tdx_identity.exceptions import FrontError, FrontRuntimeDirError

__all__ = [
    "CERT_VALIDITY",
    "RAMFS_MAGIC",
    "TMPFS_MAGIC",
    "FrontRuntimeDir",
    "FrontSettings",
    "FrontState",
    "NginxFront",
    "TlsKey",
    "filesystem_type",
    "render_nginx_config",
]

_log = logging.getLogger("tdx_identity.workload.front")

TMPFS_MAGIC: Final = 0x01021994
RAMFS_MAGIC: Final = 0x858458F6
_MEMORY_FILESYSTEMS: Final = frozenset({TMPFS_MAGIC, RAMFS_MAGIC})

CONFIG_NAME: Final = "nginx.conf"
KEY_NAME: Final = "tls-key.pem"
CERT_NAME: Final = "tls-cert.pem"
PID_NAME: Final = "nginx.pid"
_TEMP_DIRS: Final = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

CERT_VALIDITY: Final = datetime.timedelta(days=30)
"""How long the certificate of one start is valid (a restart makes a new one)."""
_CLOCK_SKEW: Final = datetime.timedelta(minutes=5)
INSTANCE_HEADER: Final = "x-instance-pubkey"


class FrontState(enum.StrEnum):
    """What `GET /instance/state` reports as ``"front"``."""

    STOPPED = "stopped"
    STARTING = "starting"
    SERVING = "serving"
    RESTARTING = "restarting"


@dataclass(frozen=True)
class FrontSettings:
    """Where the front listens, where it reaches the container, and where its files live."""

    runtime_dir: Path
    listen_host: str
    plain_port: int | None
    """Plain HTTP port; None: no plain HTTP (``--no-plain-http``)."""
    tls_port: int
    internal_port: int
    """The container's port on 127.0.0.1 (the only address it is published on)."""
    hostnames: tuple[str, ...] = ("127.0.0.1", "localhost")
    start_timeout: float = 10.0
    stop_timeout: float = 10.0
    restart_initial: float = 0.5
    restart_max: float = 30.0
    worker_processes: int = 1


# -- the TLS key -----------------------------------------------------------------------------


class TlsKey:
    """The front's TLS key (EC P-256), made in process memory at every service start; only the
    front's tmpfs directory ever holds a copy (for nginx)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise FrontError("the TLS key must be EC P-256")
        self._key = key

    @classmethod
    def generate(cls) -> TlsKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    @property
    def spki_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (what the ``tls_key`` event and the claims bind)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def spki_sha256(self) -> bytes:
        return hashlib.sha256(self.spki_der).digest()

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


# -- the private tmpfs directory ----------------------------------------------------------


class _StatFs(ctypes.Structure):
    # struct statfs of Linux (64-bit): f_type is the first member, a native long. The rest is
    # room for the kernel to write into.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def filesystem_type(path: Path) -> int:
    """The statfs(2) magic number of the filesystem holding `path` (OSError on failure)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    buf = _StatFs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(path))
    return int(buf.f_type) & 0xFFFFFFFF


class FrontRuntimeDir:
    """The front's private directory in TD memory. `open` makes (or reuses) it and checks it:
    a real directory (not a symlink), owned by this process's user, mode 0700, in a parent
    owned by root or this user that nobody else can write (or a sticky one such as /dev/shm),
    on a tmpfs or ramfs, outside `storage_path`; `FrontRuntimeDirError` (a StartupError)
    otherwise."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        storage_path: Path,
        fs_type: Callable[[Path], int] = filesystem_type,
    ) -> FrontRuntimeDir:
        if not path.is_absolute():
            raise FrontRuntimeDirError(f"front runtime dir {path} is not an absolute path")
        resolved, storage = path.resolve(), storage_path.resolve()
        if resolved == storage or storage in resolved.parents or resolved in storage.parents:
            raise FrontRuntimeDirError(
                f"front runtime dir {path} must be outside STORAGE_PATH {storage_path}: the "
                "TLS key must never reach a disk the host can read"
            )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            info = os.lstat(path)
        except OSError as exc:
            raise FrontRuntimeDirError(
                f"cannot create the front runtime dir {path}: {exc.strerror or exc}"
            ) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise FrontRuntimeDirError(f"front runtime dir {path} is not a directory")
        parent = path.parent.stat()
        shared = parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX
        if parent.st_uid not in (0, os.geteuid()) or shared:
            raise FrontRuntimeDirError(
                f"the parent of the front runtime dir, {path.parent}, is owned or writable "
                "(without the sticky bit) by another user, who could swap the directory: use "
                "a private parent"
            )
        if info.st_uid != os.geteuid():
            raise FrontRuntimeDirError(
                f"front runtime dir {path} belongs to uid {info.st_uid}, not this service's"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            path.chmod(0o700, follow_symlinks=False)
        try:
            magic = fs_type(path)
        except OSError as exc:
            raise FrontRuntimeDirError(
                f"cannot check the filesystem of the front runtime dir {path}: "
                f"{exc.strerror or exc}"
            ) from exc
        if magic not in _MEMORY_FILESYSTEMS:
            raise FrontRuntimeDirError(
                f"front runtime dir {path} is not on a tmpfs (filesystem magic {magic:#x}): "
                "the TLS key must live in TD memory only; use a directory under /dev/shm or a "
                "tmpfs /run (--front-runtime-dir)"
            )
        runtime = cls(path)
        runtime.clear()
        return runtime

    def write_private(self, name: str, data: bytes) -> Path:
        """Write `data` to `name` in the directory, mode 0600, replacing an older file."""
        target = self.path / name
        temp = self.path / f".{name}.tmp"
        temp.unlink(missing_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        temp.replace(target)
        return target

    def remove(self) -> None:
        """Empty the directory and remove it (idempotent)."""
        if not self.path.exists():
            return
        self.clear()
        self.path.rmdir()

    def clear(self) -> None:
        """Remove everything in the directory (the directory stays, empty)."""
        for entry in self.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                for sub in entry.iterdir():
                    sub.unlink(missing_ok=True)
                entry.rmdir()
            else:
                entry.unlink(missing_ok=True)


# -- the nginx configuration ----------------------------------------------------------------


def _listen(host: str, port: int) -> str:
    address = ipaddress.ip_address(host)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _nginx_path(path: Path) -> str:
    text = str(path)
    if any(ch in text for ch in " ;{}\"'\\$#") or not path.is_absolute():
        raise FrontError(f"the front runtime dir {path} cannot be named in nginx's config")
    return text


def render_nginx_config(
    settings: FrontSettings, *, runtime_dir: Path, instance_pubkey: bytes
) -> str:
    """The whole nginx configuration of the front: nothing else is read."""
    if len(instance_pubkey) != 32:
        raise FrontError("the instance public key is 32 bytes")
    if not 1 <= settings.worker_processes <= 64:
        raise FrontError("worker_processes must be 1..64")
    base = _nginx_path(runtime_dir)
    pubkey = instance_pubkey.hex()
    temp_paths = "\n".join(f"    {name}_temp_path {base}/{name};" for name in _TEMP_DIRS)
    location = f"""        location / {{
            proxy_pass http://workload;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_hide_header {INSTANCE_HEADER};
            add_header {INSTANCE_HEADER} {pubkey} always;
        }}"""
    servers: list[str] = []
    if settings.plain_port is not None:
        servers.append(
            f"""    server {{
        listen {_listen(settings.listen_host, settings.plain_port)};
{location}
    }}"""
        )
    servers.append(
        f"""    server {{
        listen {_listen(settings.listen_host, settings.tls_port)} ssl;
        ssl_certificate {base}/{CERT_NAME};
        ssl_certificate_key {base}/{KEY_NAME};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_session_tickets off;
        ssl_session_cache shared:tdx_front:1m;
{location}
    }}"""
    )
    body = "\n".join(servers)
    return f"""# Written by identity-svc for this start; nginx reads no other configuration.
daemon off;
master_process on;
worker_processes {settings.worker_processes};
pid {base}/{PID_NAME};
error_log stderr warn;
worker_shutdown_timeout {max(1, int(settings.stop_timeout))}s;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    server_tokens off;
    default_type application/octet-stream;
{temp_paths}
    keepalive_timeout 65s;
    keepalive_requests 10000;
    client_max_body_size 64m;

    upstream workload {{
        server 127.0.0.1:{settings.internal_port};
        keepalive 32;
    }}

{body}
}}
"""


# -- the front ---------------------------------------------------------------------------------


Spawn = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
"""Starts nginx from its argv (the default: `_spawn_nginx`)."""


async def _spawn_nginx(argv: Sequence[str]) -> asyncio.subprocess.Process:
    # prctl is looked up here, in the parent: the child between fork and exec only calls it.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def parent_death_sigterm() -> None:  # in the child: one system call, PR_SET_PDEATHSIG
        prctl(1, int(signal.SIGTERM), 0, 0, 0)

    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=parent_death_sigterm,
    )


class NginxFront:
    """The front: the attested certificate of this start (`report_data`/`install_certificate`,
    called by the service before anything is exposed) and the nginx process serving it
    (`start`, supervised, `stop`)."""

    def __init__(
        self,
        settings: FrontSettings,
        *,
        runtime: FrontRuntimeDir,
        tls_key: TlsKey,
        instance_key: Ed25519PrivateKey,
        nginx: Path | None,
        spawn: Spawn = _spawn_nginx,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._key = tls_key
        self._instance_pubkey = instance_key.public_key().public_bytes_raw()
        # The claims: the TLS key's SPKI hash, the instance public key and the instance key's
        # signature binding the two (made once: the key is only used for that here).
        self._claims = claims_for(tls_key.spki_der, instance_key)
        self._nginx = nginx
        self._spawn = spawn
        self._sleep = sleep
        self._now = now
        self._certificate: x509.Certificate | None = None
        self._state = FrontState.STOPPED
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._wanted = False
        self._restarts = 0

    # -- observed ----------------------------------------------------------------------------

    @property
    def state(self) -> FrontState:
        return self._state

    @property
    def spki_sha256(self) -> bytes:
        return self._key.spki_sha256

    @property
    def certificate(self) -> x509.Certificate | None:
        return self._certificate

    @property
    def restarts(self) -> int:
        """How many times the supervisor started nginx again after it exited."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    @property
    def settings(self) -> FrontSettings:
        return self._settings

    # -- the certificate (called by the service at start) -----------------------------------

    @property
    def spki_der(self) -> bytes:
        return self._key.spki_der

    def report_data(self) -> bytes:
        """The report_data the certificate's quote must carry: SHA-256 of the claims binding
        the TLS key's SPKI and the instance key (its public key and signature), zero-padded."""
        return report_data_for(self._claims.encode())

    def install_certificate(self, quote: bytes) -> None:
        """Build the self-signed certificate carrying `quote` and write the key and the
        certificate into the runtime dir (0600). FrontError when the quote does not bind."""
        now = self._now()
        try:
            certificate = build_certificate(
                self._key.private_key,
                self._claims,
                quote,
                hostnames=self._settings.hostnames,
                not_before=now - _CLOCK_SKEW,
                not_after=now + CERT_VALIDITY,
            )
        except (ValueError, AttestedTlsError) as exc:
            raise FrontError(f"cannot build the attested certificate: {exc}") from exc
        self._runtime.write_private(KEY_NAME, self._key.private_pem())
        self._runtime.write_private(CERT_NAME, certificate.public_bytes(serialization.Encoding.PEM))
        self._certificate = certificate

    # -- nginx -------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        if self._nginx is None:
            raise FrontError("nginx is not installed: the exposed workload cannot be served")
        base = self._runtime.path
        return [str(self._nginx), "-p", f"{base}/", "-c", str(base / CONFIG_NAME), "-e", "stderr"]

    async def start(self) -> None:
        """Write the configuration, start nginx and wait until it listens; then supervise
        it. A no-op while it serves or restarts. FrontError when it cannot start."""
        if self._wanted:  # serving, or the supervisor is bringing it back
            return
        if self._certificate is None:
            raise FrontError("the attested certificate was not made: the front cannot start")
        config = render_nginx_config(
            self._settings, runtime_dir=self._runtime.path, instance_pubkey=self._instance_pubkey
        )
        self._runtime.write_private(CONFIG_NAME, config.encode("ascii"))
        self._wanted = True
        self._state = FrontState.STARTING
        try:
            await self._launch()
        except FrontError:
            self._wanted = False
            self._state = FrontState.STOPPED
            raise
        self._supervisor = asyncio.create_task(self._supervise())
        _log.info(
            "front serving",
            extra={
                "plain_port": self._settings.plain_port,
                "tls_port": self._settings.tls_port,
                "internal_port": self._settings.internal_port,
                "tls_spki_sha256": self.spki_sha256.hex(),
            },
        )

    async def _launch(self) -> None:
        argv = self.argv()
        (self._runtime.path / PID_NAME).unlink(missing_ok=True)
        try:
            process = await self._spawn(argv)
        except OSError as exc:
            raise FrontError(f"cannot start nginx: {exc.strerror or exc}") from exc
        self._process = process
        deadline = time.monotonic() + self._settings.start_timeout
        ports = [p for p in (self._settings.plain_port, self._settings.tls_port) if p is not None]
        while True:
            if process.returncode is not None:
                self._kill_group(process.pid)
                raise FrontError(
                    f"nginx exited with status {process.returncode} at start (its error "
                    "is in the service's log)"
                )
            if self._pid_file_names(process.pid):
                self._state = FrontState.SERVING
                return
            if time.monotonic() > deadline:
                await self._terminate(process)
                raise FrontError(
                    f"nginx did not listen on {ports} within {self._settings.start_timeout} s"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 0.05)

    def _pid_file_names(self, pid: int) -> bool:
        """Whether nginx wrote its pid file: it does so only once it has bound every listening
        socket (a connect test would be fooled by another program on the port)."""
        try:
            text = (self._runtime.path / PID_NAME).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return False
        return text.strip() == str(pid)

    def _should_serve(self) -> bool:
        """Whether nginx should run now (read afresh after every await)."""
        return self._wanted

    async def _supervise(self) -> None:
        delay = self._settings.restart_initial
        while self._should_serve():
            process = self._process
            if process is None:
                return
            started = time.monotonic()
            returncode = await process.wait()
            if not self._should_serve():
                return
            self._state = FrontState.RESTARTING
            self._kill_group(process.pid)
            if time.monotonic() - started > 10 * self._settings.restart_max:
                delay = self._settings.restart_initial
            _log.error(
                "the front (nginx) exited; starting it again",
                extra={"returncode": returncode, "retry_in": delay},
            )
            while self._should_serve():
                await self._sleep(delay)
                delay = min(delay * 2, self._settings.restart_max)
                if not self._should_serve():
                    return
                try:
                    await self._launch()
                except FrontError as exc:
                    _log.error(
                        "the front could not be started again",
                        extra={"reason": str(exc), "retry_in": delay},
                    )
                    continue
                self._restarts += 1
                _log.info("the front serves again", extra={"restarts": self._restarts})
                break

    @staticmethod
    def _kill_group(pgid: int) -> None:
        """Kill what is left of nginx's own process group (workers of a killed master)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGQUIT (graceful), then SIGTERM, then SIGKILL; then the rest of its group."""
        for sig, wait in (
            (signal.SIGQUIT, self._settings.stop_timeout),
            (signal.SIGTERM, 2.0),
            (signal.SIGKILL, 2.0),
        ):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), wait)
        self._kill_group(process.pid)

    async def stop(self) -> None:
        """Stop nginx gracefully and stop supervising it (the front stops serving)."""
        self._wanted = False
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        process, self._process = self._process, None
        if process is not None:
            await self._terminate(process)
            _log.info("front stopped", extra={"returncode": process.returncode})
        self._state = FrontState.STOPPED

    async def shutdown(self) -> None:
        """At service stop: stop nginx, then remove the key, certificate and config files and
        the runtime dir itself (the next start makes it again)."""
        await self.stop()
        try:
            self._runtime.remove()
        except OSError as exc:
            _log.warning(
                "cannot empty the front runtime dir", extra={"reason": exc.strerror or str(exc)}
            )
