"""The attested front: its nginx configuration, its private tmpfs directory, the certificate of
each start (the TLS key measured before the quote it carries), and the real nginx (Debian's)
in front of a small loopback HTTP server standing in for the container: both ports proxy and
add `x-instance-pubkey`, TLS with the attested certificate, keep-alive, a SIGKILLed nginx
comes back, stop is graceful and leaves nothing listening, shutdown removes the files of a
front that does not serve and leaves a serving one serving; the next start adopts it (SIGHUP,
the new key confirmed by several handshakes, else a clean restart), trusting no planted pid."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import ssl
import stat
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr, FakeWorkload, make_quote

from tdx_attested_tls import parse_attested_certificate, pinned_ssl_context
from tdx_identity import Settings, StartupError, create_app
from tdx_identity.app import front_settings
from tdx_identity.exceptions import FrontError, FrontRuntimeDirError
from tdx_identity.settings import parse_settings
from tdx_identity.workload import front as front_module
from tdx_identity.workload.front import (
    CERT_NAME,
    CONFIG_NAME,
    KEY_NAME,
    PID_NAME,
    RAMFS_MAGIC,
    TMPFS_MAGIC,
    FrontRuntimeDir,
    FrontSettings,
    FrontState,
    NginxFront,
    TlsKey,
    filesystem_type,
    render_nginx_config,
    stop_left_front,
)
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_measure import EventLog, TlsKeyEvent, replay
from tdx_quote import parse_quote
from tdx_service_kit.testing import CountingTlsServer, with_x509_version

INSTANCE_KEY = Ed25519PrivateKey.generate()
PUBKEY = INSTANCE_KEY.public_key().public_bytes_raw()
EXT4_MAGIC = 0xEF53


def removed(directory: Path) -> bool:
    return not directory.exists()


def pid_of(front: NginxFront) -> int | None:
    return front.pid


def is_adopted(front: NginxFront) -> bool:
    return front.adopted


def check_key_only_in(front_dir: Path, storage: Path, pem: bytes, scalar: bytes) -> None:
    """The key file is in the private tmpfs dir (0600 in 0700); no file under STORAGE_PATH
    holds the key, in PEM or as its raw scalar."""
    key_file = front_dir / KEY_NAME
    assert key_file.read_bytes() == pem
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(front_dir.stat().st_mode) == 0o700
    assert (front_dir / CERT_NAME).exists()
    files = [path for path in storage.rglob("*") if path.is_file()]
    assert files, "the storage path holds the state, the instance key and the event log"
    for path in files:
        data = path.read_bytes()
        assert pem not in data and scalar not in data, path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def base_settings(runtime_dir: Path, **changes: object) -> FrontSettings:
    settings = FrontSettings(
        runtime_dir=runtime_dir,
        listen_host="127.0.0.1",
        plain_port=8080,
        tls_port=8443,
        internal_port=18080,
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


# -- the configuration ------------------------------------------------------------------------


def test_the_config_names_the_ports_the_header_and_tls_and_nothing_else(tmp_path: Path) -> None:
    config = render_nginx_config(
        base_settings(tmp_path), runtime_dir=Path("/dev/shm/x"), instance_pubkey=PUBKEY
    )
    lines = [line.strip() for line in config.splitlines()]
    assert "daemon off;" in lines and "master_process on;" in lines
    assert "worker_processes 1;" in lines
    assert "pid /dev/shm/x/nginx.pid;" in lines
    assert "error_log stderr warn;" in lines
    assert "listen 127.0.0.1:8080;" in lines
    assert "listen 127.0.0.1:8443 ssl;" in lines
    assert "server 127.0.0.1:18080;" in lines
    assert lines.count(f"add_header x-instance-pubkey {PUBKEY.hex()} always;") == 2
    assert lines.count("proxy_hide_header x-instance-pubkey;") == 2, "the container's is dropped"
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in lines
    assert f"ssl_certificate /dev/shm/x/{CERT_NAME};" in lines
    assert f"ssl_certificate_key /dev/shm/x/{KEY_NAME};" in lines
    assert "keepalive_timeout 65s;" in lines
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{name}_temp_path /dev/shm/x/{name};" in lines
    assert "proxy_request_buffering off;" in lines and "proxy_max_temp_file_size 0;" in lines
    assert not any(line.startswith("include") for line in lines), "no other config is read"
    words = {word.rstrip(";") for line in lines for word in line.split()}
    paths = {word for word in words if word.startswith("/") and word != "/"}  # location /
    assert all(path.startswith("/dev/shm/x/") for path in paths), paths


def test_no_plain_http_leaves_only_the_tls_server(tmp_path: Path) -> None:
    config = render_nginx_config(
        base_settings(tmp_path, plain_port=None), runtime_dir=tmp_path, instance_pubkey=PUBKEY
    )
    listens = [line.strip() for line in config.splitlines() if line.strip().startswith("listen")]
    assert listens == ["listen 127.0.0.1:8443 ssl;"]


def test_an_ipv6_listen_address_is_bracketed(tmp_path: Path) -> None:
    config = render_nginx_config(
        base_settings(tmp_path, listen_host="::"), runtime_dir=tmp_path, instance_pubkey=PUBKEY
    )
    assert "listen [::]:8443 ssl;" in config and "listen [::]:8080;" in config


@pytest.mark.parametrize("name", ["/dev/shm/a b", "/dev/shm/a;b", "/dev/shm/$x", "relative"])
def test_a_runtime_dir_nginx_cannot_name_is_refused(name: str) -> None:
    with pytest.raises(FrontError, match="cannot be named"):
        render_nginx_config(
            base_settings(Path(name)), runtime_dir=Path(name), instance_pubkey=PUBKEY
        )


def test_the_settings_give_the_front_its_ports_and_names() -> None:
    env = {"WORKLOAD_TLS_PORT": "9443", "WORKLOAD_INTERNAL_PORT": "19080", "NO_PLAIN_HTTP": "1"}
    settings = parse_settings(["--tls-hostnames", "td.example, 10.0.0.5,td.example"], env)
    front = front_settings(settings)
    assert (front.plain_port, front.tls_port, front.internal_port) == (None, 9443, 19080)
    assert front.hostnames == ("td.example", "10.0.0.5")
    defaults = front_settings(parse_settings([], {}))
    assert (defaults.plain_port, defaults.tls_port, defaults.internal_port) == (8080, 8443, 18080)
    assert defaults.hostnames == ("127.0.0.1", "localhost")
    assert defaults.runtime_dir == Path("/dev/shm/tdx-identity/front-3001")
    assert parse_settings(["--no-plain-http"], {}).plain_http is False


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"NO_PLAIN_HTTP": "maybe"}, "NO_PLAIN_HTTP"),
        ([], {"NO_PLAIN_HTTP": ""}, "NO_PLAIN_HTTP"),
        (["--workload-internal-port", "8080"], {}, "ports must differ"),
        (["--workload-tls-port", "8080"], {}, "ports must differ"),
        (["--tls-hostnames", "bad_name!"], {}, "not a DNS name"),
        (["--tls-hostnames", ","], {}, "at least one"),
        (["--front-runtime-dir", "relative/dir"], {}, "not an absolute path"),
    ],
)
def test_bad_front_settings_are_usage_errors(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_tls_port_may_equal_the_unused_plain_port() -> None:
    settings = parse_settings(["--no-plain-http", "--workload-tls-port", "8080"], {})
    assert settings.workload_tls_port == 8080 and not settings.plain_http


# -- the private tmpfs directory --------------------------------------------------------------


def test_statfs_tells_a_tmpfs_from_a_disk() -> None:
    assert filesystem_type(Path("/dev/shm")) == TMPFS_MAGIC
    assert filesystem_type(Path(__file__).parent) not in (TMPFS_MAGIC, RAMFS_MAGIC)


def test_the_runtime_dir_is_made_private_and_emptied(front_dir: Path, tmp_path: Path) -> None:
    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    assert stat.S_IMODE(front_dir.stat().st_mode) == 0o700
    written = runtime.write_private(KEY_NAME, b"secret")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    runtime.write_private(CERT_NAME, b"cert")
    runtime.write_private(CONFIG_NAME, b"config")
    runtime.write_private("other", b"x")
    (front_dir / "proxy").mkdir()
    (front_dir / "proxy" / "0000001").write_bytes(b"spilled")
    (front_dir / "elsewhere").mkdir()
    (front_dir / PID_NAME).write_text("123\n")
    FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    left = sorted(entry.name for entry in front_dir.iterdir())
    assert left == ["nginx.pid", "proxy"], "a new start finds only what adoption reads"
    assert list((front_dir / "proxy").iterdir()) == [], "nginx's temp dirs are emptied"
    runtime.remove()
    assert removed(front_dir)


def test_a_runtime_dir_on_a_disk_is_refused(front_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FrontRuntimeDirError, match=r"not on a tmpfs \(filesystem magic 0xef53\)"):
        FrontRuntimeDir.open(
            front_dir, storage_path=tmp_path / "storage", fs_type=lambda _: EXT4_MAGIC
        )


def test_a_runtime_dir_under_the_storage_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FrontRuntimeDirError, match="outside STORAGE_PATH"):
        FrontRuntimeDir.open(tmp_path / "storage" / "front", storage_path=tmp_path / "storage")


def test_a_symlinked_or_foreign_runtime_dir_is_refused(front_dir: Path, tmp_path: Path) -> None:
    front_dir.parent.mkdir(parents=True, exist_ok=True)
    target = front_dir.parent / "elsewhere"
    target.mkdir(mode=0o700)
    front_dir.symlink_to(target)
    with pytest.raises(FrontRuntimeDirError, match="is not a directory"):
        FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    front_dir.unlink()
    front_dir.mkdir(mode=0o700)
    os.chown(front_dir, 4242, 4242)
    with pytest.raises(FrontRuntimeDirError, match="belongs to uid 4242"):
        FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    os.chown(front_dir, os.geteuid(), os.getegid())
    front_dir.parent.chmod(0o777)
    with pytest.raises(FrontRuntimeDirError, match="owned or writable"):
        FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    front_dir.parent.chmod(0o1777)  # sticky, as /dev/shm: nobody else can rename it
    FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    os.chown(front_dir.parent, 4242, 4242)
    with pytest.raises(FrontRuntimeDirError, match="owned or writable"):
        FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")


# -- the certificate of a start, in the service ------------------------------------------------


async def test_the_tls_key_is_measured_before_the_quote_its_certificate_carries(
    running: Callable[..., object], settings: Settings
) -> None:
    async with running() as client:  # type: ignore[attr-defined]
        front = client.app.ctx.front
        certificate = front.certificate
        log = EventLog.from_json((await client.get("/instance/eventlog")).content)
        state = (await client.get("/instance/state")).json()
        instance = bytes.fromhex((await client.get("/instance/pubkey")).json()["pubkey"])
    der = certificate.public_bytes(serialization.Encoding.DER)
    attested = parse_attested_certificate(der)
    quote_rtmr3 = parse_quote(attested.quote).body.rtmrs[3]
    [index] = [i for i, e in enumerate(log.events) if isinstance(e, TlsKeyEvent)]
    tls_event = log.events[index]
    assert isinstance(tls_event, TlsKeyEvent)
    assert tls_event.spki_sha256 == front.spki_sha256
    assert quote_rtmr3 == replay(log.events[: index + 1]), "the quote shows the tls_key event"
    assert quote_rtmr3 != replay(log.events[:index])
    assert attested.instance_pubkey == instance, "the claims name this instance"
    assert state["tls_spki_sha256"] == front.spki_sha256.hex()
    assert state["front"] == "stopped", "before expose no front serves"


async def test_the_tls_key_lives_in_the_tmpfs_dir_only_and_is_removed_at_shutdown(
    running: Callable[..., object], settings: Settings, front_dir: Path
) -> None:
    async with running() as client:  # type: ignore[attr-defined]
        key: TlsKey = client.app.ctx.front._key
        pem = key.private_pem()
        scalar = key.private_key.private_numbers().private_value.to_bytes(32, "big")
        check_key_only_in(front_dir, settings.storage_path, pem, scalar)
    assert removed(front_dir), "the key, the certificate and their dir are removed at shutdown"


async def test_a_start_without_a_tmpfs_front_dir_is_refused(
    running: Callable[..., object], settings: Settings
) -> None:
    bad = replace(settings, front_runtime_dir=settings.storage_path / "front")
    with pytest.raises(FrontRuntimeDirError, match="outside STORAGE_PATH"):
        async with running(settings=bad):  # type: ignore[attr-defined]
            pass


# -- the real nginx ------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A tiny HTTP/1.1 keep-alive server on loopback standing in for the container; it also
    sends its own `x-instance-pubkey`, which the front must drop."""

    port: int = 0
    requests: int = 0
    connections: int = 0
    peers: set[str] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                path = head.split(b" ", 2)[1]
                body = b"hello from the workload " + path
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-instance-pubkey: spoofed\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def upstream_server() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def live_members(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (zombies awaiting their reaper do not)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def nginx_path() -> Path:
    found = installed_helpers({"nginx": HELPER_ROLES["nginx"]})
    assert "nginx" in found, "nginx is part of the setup (scripts/setup.d/20-workload.sh)"
    return found["nginx"]


@asynccontextmanager
async def real_front(
    front_dir: Path, tmp_path: Path, upstream: Upstream, **changes: object
) -> AsyncIterator[NginxFront]:
    settings = base_settings(
        front_dir,
        plain_port=free_port(),
        tls_port=free_port(),
        internal_port=upstream.port,
        stop_timeout=3.0,
        restart_initial=0.05,
        restart_max=0.2,
    )
    settings = replace(settings, **changes)  # type: ignore[arg-type]
    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    front = NginxFront(
        settings, runtime=runtime, tls_key=TlsKey.generate(), instance_key=INSTANCE_KEY,
        nginx=nginx_path(),
    )  # fmt: skip
    front.install_certificate(make_quote(front.report_data()))
    try:
        yield front
    finally:
        await front.close()


def tls_context(front: NginxFront) -> ssl.SSLContext:
    certificate = front.certificate
    assert certificate is not None
    der = certificate.public_bytes(serialization.Encoding.DER)
    return pinned_ssl_context(parse_attested_certificate(der))


def keep_alive_requests(context: ssl.SSLContext, port: int) -> tuple[str | None, int]:
    """Three GETs on one TLS connection (run in a thread: it blocks)."""
    replies = 0
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        for _ in range(3):
            conn.sendall(b"GET /ka HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while b"/ka" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return conn.version(), replies
                data += chunk
            replies += data.startswith(b"HTTP/1.1 200")
        return conn.version(), replies


def tls11_handshake_succeeds(port: int) -> bool:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            old.wrap_socket(raw, server_hostname="127.0.0.1").close()
        except (ssl.SSLError, OSError):
            return False
    return True


async def test_nginx_serves_both_ports_with_the_header_and_the_attested_certificate(
    front_dir: Path, tmp_path: Path
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as front:
        settings = front.settings
        assert settings.plain_port is not None
        assert not listening(settings.tls_port), "nothing listens before start"
        with pytest.raises(FrontError, match="certificate was not made"):
            await NginxFront(
                settings, runtime=FrontRuntimeDir(front_dir), tls_key=TlsKey.generate(),
                instance_key=INSTANCE_KEY, nginx=nginx_path(),
            ).start()  # fmt: skip
        await front.start()
        assert front.state is FrontState.SERVING
        async with httpx.AsyncClient() as plain:
            answer = await plain.get(f"http://127.0.0.1:{settings.plain_port}/index.html")
        assert answer.status_code == 200
        assert answer.text == "hello from the workload /index.html"
        assert answer.headers.get_list("x-instance-pubkey") == [PUBKEY.hex()]
        async with httpx.AsyncClient(verify=tls_context(front)) as tls:
            answers = [
                await tls.get(f"https://127.0.0.1:{settings.tls_port}/{n}") for n in range(5)
            ]
            missing = await tls.get(
                f"https://127.0.0.1:{settings.tls_port}/", headers={"Host": "x"}
            )
        assert all(a.status_code == 200 for a in answers)
        assert all(a.headers.get_list("x-instance-pubkey") == [PUBKEY.hex()] for a in answers)
        assert all(a.http_version == "HTTP/1.1" for a in answers)
        assert missing.headers["x-instance-pubkey"] == PUBKEY.hex()
        context = tls_context(front)
        version, replies = await asyncio.to_thread(keep_alive_requests, context, settings.tls_port)
        assert version in ("TLSv1.2", "TLSv1.3")
        assert replies == 3, "keep-alive: three requests answered on one connection"
        assert not await asyncio.to_thread(tls11_handshake_succeeds, settings.tls_port)
        assert upstream.requests >= 10


async def test_without_plain_http_only_tls_listens(front_dir: Path, tmp_path: Path) -> None:
    plain = free_port()
    async with (
        upstream_server() as upstream,
        real_front(front_dir, tmp_path, upstream, plain_port=None) as front,
    ):
        await front.start()
        assert listening(front.settings.tls_port)
        assert not listening(plain)


async def test_a_sigkilled_nginx_is_started_again(front_dir: Path, tmp_path: Path) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as front:
        await front.start()
        first = front.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(200):
            if front.restarts == 1 and front.state is FrontState.SERVING:
                break
            await asyncio.sleep(0.05)
        assert front.restarts == 1 and front.state is FrontState.SERVING
        assert front.pid not in (None, first)
        async with httpx.AsyncClient(verify=tls_context(front)) as tls:
            answer = await tls.get(f"https://127.0.0.1:{front.settings.tls_port}/again")
        assert answer.status_code == 200 and answer.headers["x-instance-pubkey"] == PUBKEY.hex()
        assert live_members(first) == [], "the killed master's workers went with it"


async def test_stop_is_graceful_and_leaves_nothing_listening(
    front_dir: Path, tmp_path: Path
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as front:
        await front.start()
        pid = front.pid
        assert pid is not None
        await front.start()
        assert front.pid == pid, "start is idempotent while it serves"
        await front.stop()
        assert front.state is FrontState.STOPPED and pid_of(front) is None
        assert front.settings.plain_port is not None
        assert not listening(front.settings.tls_port) and not listening(front.settings.plain_port)
        assert live_members(pid) == []
        assert (front_dir / CONFIG_NAME).exists()
    assert removed(front_dir), "shutdown removes the key, certificate, config and their dir"


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat ("Z" for an unreaped zombie), "gone" once reaped."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize("how", ["stop", "sigkill"])
async def test_nginx_group_is_killed_before_its_master_is_reaped(
    how: str, front_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is left of nginx's process group is killed while the exited master is still an
    unreaped zombie, which holds its pid: once reaped, the id may name another process group
    (the service runs as root), which a killpg would then hit."""
    seen: list[tuple[int, str]] = []
    kill_group = front_module._kill_group

    def recording(pgid: int) -> None:
        seen.append((pgid, process_state(pgid)))
        kill_group(pgid)

    monkeypatch.setattr(front_module, "_kill_group", recording)

    def spawn_stand_in(argv: object) -> subprocess.Popen[bytes]:
        # A stand-in for nginx that writes its pid file as nginx does once it listens.
        pid_file = front_dir / PID_NAME
        return subprocess.Popen(
            ["/bin/sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 60'],
            start_new_session=True,
        )

    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    settings = base_settings(front_dir, stop_timeout=3.0, restart_initial=0.05, restart_max=0.2)
    front = NginxFront(
        settings, runtime=runtime, tls_key=TlsKey.generate(), instance_key=INSTANCE_KEY,
        nginx=Path("/bin/sh"), spawn=spawn_stand_in,
    )  # fmt: skip
    front.install_certificate(make_quote(front.report_data()))
    try:
        await front.start()
        pid = front.pid
        assert pid is not None
        if how == "stop":
            await front.stop()
        else:
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if front.restarts == 1 and front.state is FrontState.SERVING:
                    break
                await asyncio.sleep(0.05)
            assert front.restarts == 1
        calls = [state for pgid, state in seen if pgid == pid]
        assert calls, seen
        assert set(calls) == {"Z"}, f"the group was killed after the master was reaped: {seen}"
        assert process_state(pid) == "gone", "reaped in the end"
    finally:
        await front.close()


async def test_a_config_that_cannot_be_written_is_a_front_error(
    front_dir: Path, tmp_path: Path
) -> None:
    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    front = NginxFront(
        base_settings(front_dir), runtime=runtime, tls_key=TlsKey.generate(),
        instance_key=INSTANCE_KEY, nginx=Path("/bin/sh"),
    )  # fmt: skip
    front.install_certificate(make_quote(front.report_data()))
    (front_dir / CONFIG_NAME).mkdir()  # the atomic rename onto it fails
    with pytest.raises(FrontError, match="cannot write the front's nginx config"):
        await front.start()
    assert front.state is FrontState.STOPPED and front.pid is None
    (front_dir / CONFIG_NAME).rmdir()
    runtime.remove()


def group_leader(argv: list[str]) -> subprocess.Popen[bytes]:
    """A program leading a process group (and a session) of its own."""
    return subprocess.Popen(argv, start_new_session=True)


async def test_an_adopted_masters_group_id_reused_by_another_group_is_not_killed(
    front_dir: Path, tmp_path: Path
) -> None:
    """An adopted master is reaped by its own parent, not by the service: once it and its
    workers are gone its id may lead another process group. What is left of its group is
    killed process by process (each through a pidfd, only those running the measured nginx),
    never by group id."""
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as first:
        await first.start()
        await first.shutdown()
        adopted, reason = front_module._left_running(front_dir, nginx_path())
        assert adopted is not None, reason
        worker_pids = [p for p in live_members(adopted.pid) if p != adopted.pid]
        assert worker_pids, "nginx's workers share its group"
        # Another program leading a group of its own stands in for a group that reused the id.
        other = group_leader(["sleep", "60"])
        try:
            reused = front_module._Nginx(other.pid, os.pidfd_open(other.pid), None, nginx_path())
            reused.kill_rest_of_group()
            reused.close()
            with pytest.raises(subprocess.TimeoutExpired):  # a group not nginx's: left alone
                other.wait(timeout=0.5)
            adopted.send(signal.SIGKILL)
            await adopted.wait_for(5.0)
            assert worker_pids == [p for p in live_members(adopted.pid) if p != adopted.pid]
            adopted.kill_rest_of_group()
            adopted.close()
            for _ in range(100):
                if live_members(adopted.pid) == []:
                    break
                await asyncio.sleep(0.05)
            assert live_members(adopted.pid) == [], "the adopted master's workers were killed"
        finally:
            other.kill()
            other.wait()


async def test_a_port_taken_makes_start_fail_naming_it(front_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with (
            upstream_server() as upstream,
            real_front(front_dir, tmp_path, upstream, tls_port=port, start_timeout=3.0) as front,
        ):
            with pytest.raises(FrontError, match="nginx exited with status 1 at start"):
                await front.start()
            assert front.state is FrontState.STOPPED


def test_the_certificate_is_valid_from_now_for_its_window(front_dir: Path, tmp_path: Path) -> None:
    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    now = datetime.datetime(2026, 12, 2, 8, 0, tzinfo=datetime.UTC)
    front = NginxFront(
        base_settings(front_dir, hostnames=("td.example", "10.0.0.5")), runtime=runtime,
        tls_key=TlsKey.generate(), instance_key=INSTANCE_KEY, nginx=None, now=lambda: now,
    )  # fmt: skip
    with pytest.raises(FrontError, match="cannot build the attested certificate"):
        front.install_certificate(make_quote(bytes(64)))
    front.install_certificate(make_quote(front.report_data()))
    certificate = front.certificate
    assert certificate is not None
    assert certificate.not_valid_before_utc < now < certificate.not_valid_after_utc

    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["td.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    with pytest.raises(FrontError, match="nginx is not installed"):
        front.argv()


async def test_a_certificate_quote_for_other_report_data_stops_the_start(
    settings: Settings, quotes: FakeQuoteSource, registry: FakeRegistry, rtmr: FakeRtmr
) -> None:
    quotes.wrong_report_data = True
    app = create_app(
        settings, quote_source=quotes, registry=registry, workload=FakeWorkload(), rtmr_device=rtmr
    )
    service = app.ctx.service
    with pytest.raises(StartupError, match="cannot get the TLS certificate's quote"):
        await service.prepare()
    log = EventLog.from_json(service.event_log_json().encode())
    assert isinstance(log.events[-1], TlsKeyEvent), "the key was measured before the quote"
    assert app.ctx.front.certificate is None


# -- across a restart of the service: the serving nginx is adopted -------------------------------


def served_spki(port: int) -> bytes:
    """The SPKI of the certificate a fresh TLS handshake with the front shows."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return (
        x509.load_pem_x509_certificate(pem.encode())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def next_start(front_dir: Path, tmp_path: Path, settings: FrontSettings) -> NginxFront:
    """What the next start of the service makes: the runtime dir opened again (the last key,
    certificate and config removed), a new TLS key and its certificate installed."""
    runtime = FrontRuntimeDir.open(front_dir, storage_path=tmp_path / "storage")
    front = NginxFront(
        settings, runtime=runtime, tls_key=TlsKey.generate(), instance_key=INSTANCE_KEY,
        nginx=nginx_path(),
    )  # fmt: skip
    front.install_certificate(make_quote(front.report_data()))
    return front


@dataclass
class RequestLoop:
    """New connections to the plain port in a loop, counting answers and failures."""

    port: int
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.done.is_set():
                try:
                    answer = await client.get(f"http://127.0.0.1:{self.port}/loop", timeout=5)
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                else:
                    self.answered += 1
                    if answer.status_code != 200:
                        self.failures.append(f"status {answer.status_code}")
                await asyncio.sleep(0.005)


async def test_a_serving_front_outlives_the_service_and_the_next_start_adopts_it(
    front_dir: Path, tmp_path: Path
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as first:
        await first.start()
        pid, old_spki = first.pid, first.spki_der
        assert pid is not None and served_spki(first.settings.tls_port) == old_spki
        plain = first.settings.plain_port
        assert plain is not None
        loop = RequestLoop(plain)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.2)
        await first.shutdown()  # the service stops: the front keeps serving
        await first.shutdown()  # the app's own call after the manager's changes nothing
        assert listening(first.settings.tls_port) and (front_dir / PID_NAME).exists()
        assert live_members(pid) != [], "nginx still runs"
        second = next_start(front_dir, tmp_path, first.settings)
        assert (front_dir / KEY_NAME).read_bytes() == second._key.private_pem(), "old key gone"
        try:
            await second.start()
            assert second.adopted and second.pid == pid, "the same master, reloaded"
            assert second.state is FrontState.SERVING
            spkis = {served_spki(first.settings.tls_port) for _ in range(10)}
            assert spkis == {second.spki_der}, "only the new key is served"
            await asyncio.sleep(0.2)
            loop.done.set()
            await task
            assert loop.failures == [] and loop.answered > 20, (loop.answered, loop.failures)
            # An adopted nginx killed with SIGKILL comes back too, as our child.
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if second.restarts == 1 and second.state is FrontState.SERVING:
                    break
                await asyncio.sleep(0.05)
            assert second.restarts == 1 and second.pid not in (None, pid)
            assert not is_adopted(second), "a fresh nginx, our child"
            assert served_spki(first.settings.tls_port) == second.spki_der
            assert live_members(pid) == [], "the killed master's workers went with it"
        finally:
            await second.close()
        assert not listening(first.settings.tls_port) and not listening(plain)
        assert removed(front_dir), "the explicit stop leaves nothing"


async def test_a_reload_not_confirmed_in_time_restarts_nginx_cleanly(
    front_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as first:
        await first.start()
        pid = first.pid
        assert pid is not None
        await first.shutdown()
        # No number of handshakes within the timeout can confirm the reload here.
        impatient = replace(first.settings, confirm_handshakes=10**6, start_timeout=1.0)
        second = next_start(front_dir, tmp_path, impatient)
        try:
            await second.start()
            assert not second.adopted and second.pid not in (None, pid)
            assert live_members(pid) == [], "the unconfirmed nginx and its workers are gone"
            assert served_spki(first.settings.tls_port) == second.spki_der
            assert "did not serve this start's certificate in time" in caplog.text
        finally:
            await second.close()


@dataclass
class Planted:
    what: str
    reason: str


PLANTED = [
    Planted("another program", "not the measured nginx"),
    Planted("another uid", "runs as uid 65534"),
    Planted("another nginx", "not the nginx master of this front's directory"),
    Planted("a stale pid", "stale pid file"),
]


def spawn(argv: list[str], uid: int | None = None) -> subprocess.Popen[bytes]:
    """Another process whose pid a host could plant in the pid file."""
    return subprocess.Popen(argv, user=uid, group=uid)


def end_process(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


@pytest.mark.parametrize("planted", PLANTED, ids=[p.what for p in PLANTED])
async def test_a_planted_pid_file_is_neither_adopted_nor_signalled(
    planted: Planted, front_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(upstream_server())
        front = await stack.enter_async_context(real_front(front_dir, tmp_path, upstream))
        victim: subprocess.Popen[bytes] | None = None
        if planted.what == "another program":
            victim = spawn(["sleep", "60"])
            pid = victim.pid
        elif planted.what == "another uid":
            victim = spawn(["sleep", "60"], uid=65534)
            pid = victim.pid
        elif planted.what == "another nginx":
            other_dir = front_dir.parent / "other-front"
            other = await stack.enter_async_context(real_front(other_dir, tmp_path, upstream))
            await other.start()
            assert other.pid is not None
            pid = other.pid
        else:
            gone = spawn(["true"])
            gone.wait()
            pid = gone.pid
        if victim is not None:
            stack.callback(end_process, victim)
        (front_dir / PID_NAME).write_text(f"{pid}\n")
        await front.start()
        assert not front.adopted and front.pid not in (None, pid), "a fresh nginx serves"
        assert served_spki(front.settings.tls_port) == front.spki_der
        reasons = [str(getattr(record, "reason", "")) for record in caplog.records]
        assert any(planted.reason in reason for reason in reasons), reasons
        if planted.what == "another nginx":
            assert other.pid == pid and other.state is FrontState.SERVING, "not signalled"
        elif victim is not None:
            assert victim.poll() is None, "the planted process was not signalled"


async def test_a_start_that_serves_nothing_stops_the_front_left_serving(
    front_dir: Path, tmp_path: Path
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as first:
        await first.start()
        pid = first.pid
        assert pid is not None
        await first.shutdown()
        second = next_start(front_dir, tmp_path, first.settings)
        assert await second.stop_left_running()
        assert live_members(pid) == [] and not listening(first.settings.tls_port)
        assert not await second.stop_left_running(), "once"
        await second.start()  # nothing left to adopt: a fresh nginx
        assert not second.adopted and second.pid is not None
        await second.shutdown()
        assert stop_left_front(front_dir, nginx_path())
        assert not listening(first.settings.tls_port) and removed(front_dir)
        assert not stop_left_front(front_dir, nginx_path())


async def test_a_start_waits_for_the_stop_of_the_front_left_serving(
    front_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's start stops the front left serving when it did not start one, while a
    background comparison that agrees later starts the front: the start waits for that stop
    instead of adopting the nginx being stopped (which the stop then took down, and whose
    pid file it removed under the supervisor's next nginx)."""
    terminate = NginxFront._terminate

    async def slow_terminate(self: NginxFront, process: front_module._Nginx) -> None:
        await asyncio.sleep(1.0)  # a graceful quit that waits for an in-flight request
        await terminate(self, process)

    monkeypatch.setattr(NginxFront, "_terminate", slow_terminate)
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as first:
        await first.start()
        pid = first.pid
        assert pid is not None
        await first.shutdown()
        second = next_start(front_dir, tmp_path, first.settings)
        try:
            stopping = asyncio.create_task(second.stop_left_running())
            await asyncio.sleep(0.1)  # the stop is under way when the comparison agrees
            await second.start()
            assert await stopping, "the front left serving was stopped"
            assert live_members(pid) == [], "and not adopted"
            await asyncio.sleep(1.0)
            assert second.state is FrontState.SERVING and second.restarts == 0
            assert second.pid not in (None, pid) and not second.adopted
            assert (front_dir / PID_NAME).read_text().strip() == str(second.pid)
            assert served_spki(first.settings.tls_port) == second.spki_der
        finally:
            await second.close()


async def test_a_service_start_that_exposes_nothing_stops_the_front_left_serving(
    running: Callable[..., object], front_dir: Path, tmp_path: Path
) -> None:
    async with upstream_server() as upstream, real_front(front_dir, tmp_path, upstream) as left:
        await left.start()
        pid = left.pid
        assert pid is not None
        await left.shutdown()  # a previous start of the service, stopped while it served
        assert listening(left.settings.tls_port)
        async with running() as client:  # type: ignore[attr-defined]
            assert live_members(pid) == [], "a start with nothing exposed serves nothing"
            assert not listening(left.settings.tls_port)
            state = (await client.get("/instance/state")).json()
            assert state["front"] == "stopped"
            assert client.app.ctx.front.spki_sha256.hex() == state["tls_spki_sha256"]
        assert removed(front_dir)


async def test_a_served_certificate_of_an_unknown_x509_version_is_no_key(tmp_path: Path) -> None:
    """Whatever answers on the front's port with a certificate cryptography refuses as
    `InvalidVersion` (not a ValueError) shows no key: the confirmation waits, nothing raises."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with CountingTlsServer(cert_pem, key_pem) as server:
        served = await front_module._served_spki("127.0.0.1", server.port, seconds=2.0)
        assert served == certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        server.use(with_x509_version(cert_pem, 5), key_pem)
        assert await front_module._served_spki("127.0.0.1", server.port, seconds=2.0) is None
