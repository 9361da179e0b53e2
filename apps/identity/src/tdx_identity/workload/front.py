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
(``proxy_request_buffering off``, ``proxy_max_temp_file_size 0``). Each start removes the last
start's key, certificate and configuration from the directory (only nginx's pid file and its
empty temp dirs stay, for the adoption below); a reboot clears the tmpfs anyway.

No other configuration. nginx runs as ``nginx -p <dir>/ -c <dir>/nginx.conf -e stderr`` with
``daemon off`` and ``master_process on``: no file of the distribution's /etc/nginx is read,
and its error log goes to the service's stderr.

Across a restart of the service. nginx is not stopped when the service stops while it serves
(as the container is not): it is its own session, without a parent-death signal, so the front
keeps answering while the service restarts. The next start adopts it (`NginxFront.start`): the
pid in the runtime dir's pid file is trusted only if a pidfd opened on it names a live process
of this user, running the nginx program this start measured (``/proc/<pid>/exe``), as the
master of exactly this start's command line (``/proc/<pid>/cmdline``, which nginx retitles
``nginx: master process <argv>``), leading its own process group; a pid that fails any check is
never signalled (the host may have planted the file). The new key and certificate (this start's
``tls_key`` event) are already in place (written atomically), the configuration is rewritten,
and the master gets SIGHUP: new workers serve the new certificate, old ones finish their
requests. The reload counts only once `confirm_handshakes` consecutive TLS handshakes show the
new key's SPKI (old workers still answer for a moment), within `start_timeout`; otherwise nginx
is stopped and started afresh (logged). A start that ends without starting the front (nothing
exposed, a refused or locked workload, no agreement with the registry yet, a failed start)
stops the nginx left running (`stop_left_running`), so a previous certificate is never served
under this start's event log. `stop_left_front` is the explicit stop of a front whose service
is gone (tests' and benchmarks' cleanup).

Supervision. nginx, our child or adopted, is watched through a pidfd (``os.pidfd_open``, polled
for readability in the event loop) and signalled through it (``pidfd_send_signal``), so a pid
reused after its exit is never signalled. When nginx exits while it should serve (e.g.
SIGKILL), what is left of its group (workers that outlive a killed master hold the listening
sockets) is killed (for our child before it is reaped: its zombie holds the pid, so the group
id cannot name another group yet; for an adopted master, which its own parent reaped, member by
member through pidfds, only those running the measured nginx), and it is started again with a
bounded back-off, logged each time. `stop` sends SIGQUIT (graceful: in-flight requests
finish), then SIGTERM, then SIGKILL after `stop_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import datetime
import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import select
import signal
import ssl
import stat
import subprocess
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
from tdx_identity.exceptions import FrontError, FrontRuntimeDirError, UnsafeFileError
from tdx_identity.files import DATA_MODE_MASK, atomic_replace, read_private

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
    "front_argv",
    "render_nginx_config",
    "stop_left_front",
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
    confirm_handshakes: int = 5
    """Consecutive TLS handshakes that must show the new key before an adopted nginx's reload
    counts (old workers still answer for a moment after SIGHUP)."""


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
        """Write `data` to `name` in the directory, mode 0600, atomically (temp file, fsync,
        rename, fsync of the directory): nginx reading it at a reload sees the old file or the
        new one, never a mix."""
        target = self.path / name
        atomic_replace(target, data, mode=0o600)
        return target

    def remove(self) -> None:
        """Empty the directory and remove it (idempotent)."""
        if not self.path.exists():
            return
        self.clear(keep_nginx=False)
        self.path.rmdir()

    def clear(self, *, keep_nginx: bool = True) -> None:
        """Remove everything in the directory: the last start's key, certificate and config go.
        With `keep_nginx`, nginx's pid file and its (emptied) temp dirs stay, for an nginx the
        last start left serving to be adopted (see module)."""
        for entry in self.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                for sub in entry.iterdir():
                    sub.unlink(missing_ok=True)
                if not (keep_nginx and entry.name in _TEMP_DIRS):
                    entry.rmdir()
            elif not (keep_nginx and entry.name == PID_NAME):
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


# -- one nginx master, watched through a pidfd ----------------------------------------------------


class _Nginx:
    """An nginx master the front supervises through a pidfd: our child (`child` set; reaped
    once it exited) or the one a previous start left serving (not our child: no status)."""

    def __init__(
        self,
        pid: int,
        pidfd: int,
        child: subprocess.Popen[bytes] | None,
        program: Path | None = None,
    ) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd
        self._child = child
        self._program = program  # the measured nginx an adopted master was checked to run
        self._exited: asyncio.Future[None] | None = None

    @property
    def adopted(self) -> bool:
        return self._child is None

    def running(self) -> bool:
        """Whether the process is alive (its pidfd is readable once it exited)."""
        pidfd = self._pidfd
        if pidfd is None:
            return False
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return not poller.poll(0)

    def returncode(self) -> int | None:
        """Its exit status once it exited, when it was our child (None otherwise); never
        blocks. The child is reaped here once it exited, after what is left of its process
        group was killed: until the reap its zombie holds the pid, so the group id cannot yet
        name another process group (the service runs as root)."""
        child = self._child
        if child is None or (self._pidfd is not None and self.running()):
            return None
        if child.returncode is None and _exited_unreaped(self.pid):
            _kill_group(self.pid)
        return child.poll()

    def kill_rest_of_group(self) -> None:
        """Once it exited: kill what is left of its process group (workers of a killed master).
        Our child is reaped here, after the kill (`returncode`). An adopted master was reaped
        by its own parent, after which its id may lead another group: its members are killed
        one by one instead, each through a pidfd and only if it runs the measured nginx."""
        if self._child is not None:
            self.returncode()
        elif self._program is not None:
            _kill_nginx_members(self.pid, self._program)

    def send(self, sig: signal.Signals) -> None:
        """Signal this very process (never a pid reused after its exit)."""
        if self._pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    async def wait(self) -> int | None:
        """Until it exited (the pidfd polled in the event loop); its status when our child."""
        pidfd = self._pidfd
        if pidfd is not None and self._exited is None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                loop.remove_reader(pidfd)
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, readable)
            self._exited = exited
        if self._exited is not None:
            await asyncio.shield(self._exited)
        return self.returncode()

    async def wait_for(self, seconds: float) -> bool:
        """Wait at most `seconds` for it to exit; whether it did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), seconds)
        return not self.running()

    def close(self) -> None:
        """Stop watching (the process itself is left as it is)."""
        pidfd, self._pidfd = self._pidfd, None
        exited = self._exited
        if pidfd is None:
            return
        if exited is not None and not exited.done():
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(pidfd)
            exited.cancel()
        os.close(pidfd)


def front_argv(nginx: Path, runtime_dir: Path) -> list[str]:
    """nginx's command line for the front in `runtime_dir` (no other configuration read)."""
    return [
        str(nginx),
        "-p",
        f"{runtime_dir}/",
        "-c",
        str(runtime_dir / CONFIG_NAME),
        "-e",
        "stderr",
    ]


def _left_running(runtime_dir: Path, nginx: Path) -> tuple[_Nginx | None, str]:
    """The nginx master a previous start left serving from `runtime_dir`, checked as the module
    says, with a pidfd on it; else None and why (nothing was signalled)."""
    try:
        text = read_private(
            runtime_dir / PID_NAME, max_bytes=32, mode_mask=DATA_MODE_MASK, owned_by_us=True
        )
    except FileNotFoundError:
        return None, "no pid file"
    except (OSError, UnsafeFileError) as exc:
        return None, f"unusable pid file: {exc}"
    digits = text.strip()
    if not digits.isdigit() or not 1 < int(digits) < 1 << 22:
        return None, "the pid file does not hold a pid"
    pid = int(digits)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None, f"stale pid file: no process {pid}"
    except OSError as exc:
        return None, f"cannot open a pidfd on {pid}: {exc.strerror or exc}"
    process = _Nginx(pid, pidfd, None, nginx)
    # The pidfd was opened first: if `pid` still runs once /proc was read, /proc described the
    # process the pidfd names, and every signal goes to that process only.
    reason = _not_our_nginx(pid, nginx, front_argv(nginx, runtime_dir))
    if reason is None and not process.running():
        reason = f"process {pid} exited while it was checked"
    if reason is not None:
        process.close()
        return None, reason
    return process, ""


def _not_our_nginx(pid: int, nginx: Path, argv: Sequence[str]) -> str | None:
    """Why process `pid` is not the nginx master of this front (None: it is)."""
    proc = Path(f"/proc/{pid}")
    try:
        status = (proc / "status").read_text(encoding="ascii", errors="replace")
        exe = str((proc / "exe").readlink())
        cmdline = (proc / "cmdline").read_bytes()
        pgid = os.getpgid(pid)
    except (OSError, ProcessLookupError) as exc:
        return f"cannot inspect process {pid}: {getattr(exc, 'strerror', None) or exc}"
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    if not uids or any(uid != str(os.geteuid()) for uid in uids):
        return f"process {pid} runs as uid {'/'.join(uids) or '?'}, not as this service's"
    if exe != os.path.realpath(nginx):
        return f"process {pid} runs {exe}, not the measured nginx {nginx}"
    expected = ("nginx: master process " + " ".join(argv)).encode()
    if cmdline.rstrip(b"\0") != expected:
        return f"process {pid} is not the nginx master of this front's directory"
    if pgid != pid:
        return f"process {pid} does not lead its own process group"
    return None


def _exited_unreaped(pid: int) -> bool:
    """Whether our child `pid` has exited and is not reaped yet (it is not reaped here)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return info is not None


def _kill_nginx_members(pgid: int, nginx: Path) -> None:
    """SIGKILL, through a pidfd each, the live processes of group `pgid` that run `nginx`
    (checked after the pidfd was opened, so a reused pid is never signalled)."""
    program = os.path.realpath(nginx)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pidfd = os.pidfd_open(int(entry.name))
        except OSError:
            continue
        try:
            stat_fields = (entry / "stat").read_text(encoding="ascii", errors="replace")
            member_pgid = int(stat_fields.rsplit(")", 1)[1].split()[2])
            if member_pgid != pgid or str((entry / "exe").readlink()) != program:
                continue
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(0):  # still the process /proc described
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue
        finally:
            os.close(pidfd)


def _kill_group(pgid: int) -> None:
    """Kill what is left of nginx's own process group (workers of a killed master)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_left_front(runtime_dir: Path, nginx: Path, *, timeout: float = 10.0) -> bool:
    """Stop the nginx a stopped service left serving from `runtime_dir` (checked as for an
    adoption: anything else is not signalled) and remove the directory; True when one ran.
    Blocking: for cleanup by tests and benchmarks, or by an operator's script."""
    process, _ = _left_running(runtime_dir, nginx)
    if process is not None:
        try:
            for sig, wait in (
                (signal.SIGQUIT, timeout),
                (signal.SIGTERM, 2.0),
                (signal.SIGKILL, 2.0),
            ):
                if not process.running():
                    break
                process.send(sig)
                deadline = time.monotonic() + wait
                while process.running() and time.monotonic() < deadline:
                    time.sleep(0.02)
            process.kill_rest_of_group()
        finally:
            process.close()
    if runtime_dir.is_dir() and not runtime_dir.is_symlink():
        FrontRuntimeDir(runtime_dir).remove()
    return process is not None


# -- the front ---------------------------------------------------------------------------------


Spawn = Callable[[Sequence[str]], subprocess.Popen[bytes]]
"""Starts nginx from its argv (the default: `_spawn_nginx`)."""


def _spawn_nginx(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    # Its own session, no parent-death signal: it outlives a stop (or a crash) of the service,
    # whose next start adopts it. Not an asyncio subprocess: asyncio kills a child whose
    # transport it closes.
    return subprocess.Popen(  # noqa: S603 - our own argv (front_argv), never a shell
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


async def _served_spki(host: str, port: int, seconds: float) -> bytes | None:
    """The DER SPKI of the certificate a fresh TLS handshake with `host:port` shows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only the key is compared, with the one we made
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), seconds
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), seconds)
    if der is None:
        return None
    try:
        public_key = x509.load_der_x509_certificate(der).public_key()
    except (ValueError, x509.InvalidVersion):
        return None
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _loopback_for(host: str) -> str:
    """Where this host reaches a listener on `host` (an unspecified address: loopback)."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return str(address)


class NginxFront:
    """The front: the attested certificate of this start (`report_data`/`install_certificate`,
    called by the service before anything is exposed) and the nginx process serving it
    (`start`: adopted from the previous start or launched, supervised; `stop`)."""

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
        self._process: _Nginx | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._wanted = False
        self._left_serving = False
        self._restarts = 0
        self._adoptions = 0
        # `start` and `stop_left_running` one at a time: a start waits for the stop of the
        # nginx left serving instead of adopting it while it is being stopped.
        self._left_running_lock = asyncio.Lock()

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
    def adopted(self) -> bool:
        """Whether the nginx serving now is the one a previous start left running."""
        process = self._process
        return process is not None and process.adopted and process.running()

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or not process.running() else process.pid

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
        certificate into the runtime dir (0600, each atomically). FrontError when the quote
        does not bind."""
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
        try:
            self._runtime.write_private(KEY_NAME, self._key.private_pem())
            self._runtime.write_private(
                CERT_NAME, certificate.public_bytes(serialization.Encoding.PEM)
            )
        except OSError as exc:
            raise FrontError(
                f"cannot write the TLS key and certificate: {exc.strerror or exc}"
            ) from exc
        self._certificate = certificate

    # -- nginx -------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        if self._nginx is None:
            raise FrontError("nginx is not installed: the exposed workload cannot be served")
        return front_argv(self._nginx, self._runtime.path)

    async def start(self) -> None:
        """Write the configuration, then adopt the nginx a previous start left serving (reload
        with this start's certificate, confirmed) or start nginx and wait until it listens;
        then supervise it. A no-op while it serves or restarts. FrontError when it cannot
        start."""
        async with self._left_running_lock:
            await self._start()

    async def _start(self) -> None:
        if self._wanted:  # serving, or the supervisor is bringing it back
            return
        if self._certificate is None:
            raise FrontError("the attested certificate was not made: the front cannot start")
        config = render_nginx_config(
            self._settings, runtime_dir=self._runtime.path, instance_pubkey=self._instance_pubkey
        )
        argv = self.argv()
        try:
            self._runtime.write_private(CONFIG_NAME, config.encode("ascii"))
        except OSError as exc:
            raise FrontError(
                f"cannot write the front's nginx config: {exc.strerror or exc}"
            ) from exc
        self._wanted = True
        self._left_serving = False
        self._state = FrontState.STARTING
        try:
            if not await self._adopt():
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
                "adopted": self.adopted,
                "argv": argv,
            },
        )

    async def _adopt(self) -> bool:
        """Take over the nginx the previous start left serving: SIGHUP (it reads this start's
        config, key and certificate), then confirm it serves the new key; if it does not in
        time, stop it (the caller starts a fresh one). False when none may be adopted."""
        if self._nginx is None:
            return False
        process, reason = _left_running(self._runtime.path, self._nginx)
        if process is None:
            if reason != "no pid file":
                _log.warning(
                    "the front's pid file names no nginx of ours: not adopted, not signalled",
                    extra={"reason": reason},
                )
            return False
        process.send(signal.SIGHUP)
        if await self._confirm_new_key(process):
            self._process = process
            self._state = FrontState.SERVING
            self._adoptions += 1
            _log.info(
                "front adopted: the nginx left serving by the previous start reloaded with this "
                "start's certificate",
                extra={"pid": process.pid, "tls_spki_sha256": self.spki_sha256.hex()},
            )
            return True
        _log.error(
            "the adopted front did not serve this start's certificate in time; restarting it",
            extra={"pid": process.pid, "timeout": self._settings.start_timeout},
        )
        await self._terminate(process)
        return False

    async def _confirm_new_key(self, process: _Nginx) -> bool:
        """Whether `confirm_handshakes` consecutive fresh TLS handshakes show this start's
        key before `start_timeout` (one alone may still reach an old worker)."""
        host = _loopback_for(self._settings.listen_host)
        wanted = self._key.spki_der
        deadline = time.monotonic() + self._settings.start_timeout
        streak = 0
        while time.monotonic() < deadline and process.running():
            served = await _served_spki(host, self._settings.tls_port, seconds=2.0)
            if served is not None and hmac.compare_digest(served, wanted):
                streak += 1
                if streak >= self._settings.confirm_handshakes:
                    return True
                await asyncio.sleep(0.02)
                continue
            streak = 0
            await asyncio.sleep(0.05)
        return False

    async def _launch(self) -> None:
        argv = self.argv()
        (self._runtime.path / PID_NAME).unlink(missing_ok=True)
        try:
            child = self._spawn(argv)
        except OSError as exc:
            raise FrontError(f"cannot start nginx: {exc.strerror or exc}") from exc
        try:
            pidfd = os.pidfd_open(child.pid)
        except OSError as exc:  # it cannot have been reaped: only we wait for it
            child.kill()
            child.wait()
            raise FrontError(f"cannot watch nginx: {exc.strerror or exc}") from exc
        process = _Nginx(child.pid, pidfd, child)
        self._process = process
        deadline = time.monotonic() + self._settings.start_timeout
        ports = [p for p in (self._settings.plain_port, self._settings.tls_port) if p is not None]
        while True:
            if not process.running():
                returncode = await process.wait()
                process.kill_rest_of_group()
                process.close()
                raise FrontError(
                    f"nginx exited with status {returncode} at start (its error "
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
            await process.wait_for(0.05)

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
            process.kill_rest_of_group()
            process.close()
            if time.monotonic() - started > 10 * self._settings.restart_max:
                delay = self._settings.restart_initial
            _log.error(
                "the front (nginx) exited; starting it again",
                extra={"returncode": returncode, "adopted": process.adopted, "retry_in": delay},
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

    async def _terminate(self, process: _Nginx) -> None:
        """SIGQUIT (graceful), then SIGTERM, then SIGKILL; then the rest of its group."""
        for sig, wait in (
            (signal.SIGQUIT, self._settings.stop_timeout),
            (signal.SIGTERM, 2.0),
            (signal.SIGKILL, 2.0),
        ):
            if not process.running():
                break
            process.send(sig)
            await process.wait_for(wait)
        process.kill_rest_of_group()
        process.close()

    async def _stop_supervising(self) -> _Nginx | None:
        self._wanted = False
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        process, self._process = self._process, None
        self._state = FrontState.STOPPED
        return process

    async def stop(self) -> None:
        """Stop nginx gracefully and stop supervising it (the front stops serving)."""
        process = await self._stop_supervising()
        if process is not None:
            await self._terminate(process)
            _log.info("front stopped", extra={"returncode": process.returncode()})

    async def stop_left_running(self) -> bool:
        """When this start did not start the front: stop an nginx a previous start left serving
        (checked as for an adoption), so no earlier certificate is served under this start's
        event log. True when there was one. A `start` meanwhile waits for it."""
        async with self._left_running_lock:
            if self._wanted or self._nginx is None:
                return False
            process, _ = _left_running(self._runtime.path, self._nginx)
            if process is None:
                return False
            await self._terminate(process)
            (self._runtime.path / PID_NAME).unlink(missing_ok=True)
        _log.warning(
            "stopped the front a previous start left serving: this start serves nothing",
            extra={"pid": process.pid},
        )
        return True

    async def close(self) -> None:
        """Stop nginx and remove the key, certificate and config files and the runtime dir:
        the explicit stop (nothing is left for a next start)."""
        self._left_serving = False
        await self.stop()
        await self.stop_left_running()
        self._remove_runtime_dir()

    async def shutdown(self) -> None:
        """At service stop. A serving nginx is left serving with its files, for the next start
        to adopt (as the container is left running: the front keeps answering while the service
        restarts); otherwise it is stopped and the key, certificate, config and the runtime dir
        are removed. Idempotent."""
        if self._left_serving:
            return
        process = self._process
        if self._wanted and process is not None and process.running():
            await self._stop_supervising()
            process.close()
            self._left_serving = True
            _log.info(
                "front left serving across the service's stop; the next start adopts it",
                extra={"pid": process.pid, "tls_spki_sha256": self.spki_sha256.hex()},
            )
            return
        await self.stop()
        self._remove_runtime_dir()

    def _remove_runtime_dir(self) -> None:
        try:
            self._runtime.remove()
        except OSError as exc:
            _log.warning(
                "cannot empty the front runtime dir", extra={"reason": exc.strerror or str(exc)}
            )
