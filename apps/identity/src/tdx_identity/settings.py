"""Settings of the identity service, parsed once from flags and environment.

`Settings` is the flat view the flags and environment variables give; `app.create_app` hands
each component only its own part (`PlatformSettings`, `WorkloadSettings`, the registry's URL).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tdx_identity.exceptions import WorkloadConfigError
from tdx_identity.platform.kernel import DEFAULT_CONFIGFS_TSM_PATH, SYSFS_RTMR3_PATH
from tdx_identity.workload.config import DEFAULT_CAP_ADD, Hardening
from tdx_service_kit import (
    HttpLimits,
    RateLimit,
    add_connection_limit_flags,
    parse_bool,
    with_connection_limits,
)

__all__ = [
    "Settings",
    "build_parser",
    "front_runtime_dir",
    "measured_settings",
    "parse_settings",
]

# A tmpfs on every Linux; `FrontRuntimeDir.open` makes this parent 0700 and refuses one that
# another user owns or can write, so nobody else can swap the directory under it.
DEFAULT_FRONT_RUNTIME_PARENT = Path("/dev/shm/tdx-identity")  # noqa: S108

_CONTAINER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Flags win over environment variables."""

    host: str = "127.0.0.1"
    port: int = 3001
    storage_path: Path = Path("/mnt")
    mock_tdx_url: str | None = None
    registry_url: str = "http://localhost:3000"
    configfs_tsm_path: Path = DEFAULT_CONFIGFS_TSM_PATH
    rtmr_sysfs_path: Path = SYSFS_RTMR3_PATH
    registry_timeout: float = 15.0
    # The start-up comparison with the registry, while it does not agree: 1 s doubling to 60 s.
    registry_retry_initial: float = 1.0
    registry_retry_max: float = 60.0
    quote_timeout: float = 15.0
    log_level: str = "INFO"
    ssh_listen: str = "0.0.0.0"  # noqa: S104 - the owner reaches SSH setup access remotely
    ssh_port: int = 2222
    workload_port: int = 8080
    workload_publish_host: str = "0.0.0.0"  # noqa: S104 - the workload serves the network
    # The attested front (nginx) on expose: plain HTTP on workload_port (unless plain_http is
    # off) and TLS on workload_tls_port, both on workload_publish_host, proxying to the container
    # published on 127.0.0.1:workload_internal_port only.
    workload_tls_port: int = 8443
    workload_internal_port: int = 18080
    plain_http: bool = True
    tls_hostnames: tuple[str, ...] = ("127.0.0.1", "localhost")
    # The TLS key, certificate and nginx's files: a private directory on a tmpfs (TD memory);
    # None: /dev/shm/tdx-identity/front-<port> (`front_runtime_dir`).
    front_runtime_dir: Path | None = None
    clear_mount_dir: Path = Path("/run/tdx-identity/clear")
    # The store key lives apart from STORAGE_PATH (the TD's root disk, not the data volume), so
    # that an image of the data volume alone does not hold the key to its own ciphertext.
    store_key_path: Path = Path("/var/lib/tdx-identity/store.key")
    container_name: str = "tdx-workload"
    # The owner's key broker (tdx-kbs, Trustee's KBS protocol) that releases the store key
    # against fresh evidence; None: the local key file (which the host can read).
    key_broker_url: str | None = None
    key_broker_timeout: float = 10.0
    # While the broker is down or refuses at start: 1 s doubling to 30 s (with jitter).
    key_broker_retry_initial: float = 1.0
    key_broker_retry_max: float = 30.0
    # Serve v1 owner bodies (no seq, no action): replayable, so only for clients not yet updated.
    accept_unsequenced_requests: bool = False
    # Take v1 operator/owner signatures (over the raw instance key, naming no role): pre-v2 only.
    accept_v1_signatures: bool = False
    hardening: Hardening = field(default_factory=Hardening)
    limits: HttpLimits = field(default_factory=HttpLimits)
    rate_limit: RateLimit | None = field(default_factory=RateLimit)


def front_runtime_dir(settings: Settings) -> Path:
    """The front's private tmpfs directory: the setting, else one per service port under
    /dev/shm (so two services on one machine never share it)."""
    if settings.front_runtime_dir is not None:
        return settings.front_runtime_dir
    return DEFAULT_FRONT_RUNTIME_PARENT / f"front-{settings.port}"


def _without_userinfo(url: str) -> str:
    """`url` without a ``user:password@`` part, which may be a secret and is never measured."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _setting_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(sorted(str(item) for item in value))
    return str(value)


def measured_settings(settings: Settings) -> dict[str, str]:
    """The effective settings that change how the service behaves, as the `config` event
    measures them at every start: listeners, ports, the registry, the quote and RTMR3 source,
    where the keys and stores live, replay tolerance, and every workload hardening field.
    Nothing secret: URLs lose any user:password part, and keys are named by path only."""
    measured = {
        "host": settings.host,
        "port": settings.port,
        "registry_url": _without_userinfo(settings.registry_url),
        "mock_tdx_url": (
            _without_userinfo(settings.mock_tdx_url) if settings.mock_tdx_url else None
        ),
        "configfs_tsm_path": settings.configfs_tsm_path,
        "rtmr_sysfs_path": settings.rtmr_sysfs_path,
        "storage_path": settings.storage_path,
        "instance_key_source": "file in storage_path",
        "store_key_source": "key broker" if settings.key_broker_url else "local file",
        "store_key_path": settings.store_key_path,
        "key_broker_url": (
            _without_userinfo(settings.key_broker_url) if settings.key_broker_url else None
        ),
        "clear_mount_dir": settings.clear_mount_dir,
        "container_name": settings.container_name,
        "ssh_listen": settings.ssh_listen,
        "ssh_port": settings.ssh_port,
        "workload_port": settings.workload_port,
        "workload_publish_host": settings.workload_publish_host,
        "workload_tls_port": settings.workload_tls_port,
        "workload_internal_port": settings.workload_internal_port,
        "plain_http": settings.plain_http,
        "tls_hostnames": ",".join(settings.tls_hostnames),
        "front_runtime_dir": front_runtime_dir(settings),
        "accept_unsequenced_requests": settings.accept_unsequenced_requests,
    }
    for item in dataclasses.fields(settings.hardening):
        measured[f"hardening_{item.name}"] = getattr(settings.hardening, item.name)
    return {name: _setting_text(value) for name, value in measured.items()}


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1..65535: {value}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _absolute_path(text: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise argparse.ArgumentTypeError(f"not an absolute path: {text!r}")
    return path


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    re.ASCII,
)


def _hostnames(text: str) -> tuple[str, ...]:
    """A comma-separated list of DNS names and IP addresses (the certificate's SANs)."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        try:
            name = str(ipaddress.ip_address(name))
        except ValueError:
            if not _HOSTNAME_RE.fullmatch(name):
                raise argparse.ArgumentTypeError(
                    f"not a DNS name or IP address: {name!r}"
                ) from None
            name = name.lower()
        if name not in names:
            names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("give at least one DNS name or IP address")
    return tuple(names)


def _container_name(text: str) -> str:
    if not _CONTAINER_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a container name (letters, digits, '_.-', at most 63): {text!r}"
        )
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _capabilities(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    try:
        return Hardening(cap_add=names).cap_add
    except WorkloadConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The `identity-svc` argument parser; environment variables provide the defaults."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="identity-svc",
        description="Identity service of a TDX confidential VM (instance key, operator and "
        "owner registration, workload).",
    )
    parser.add_argument(
        "--host", default=defaults.host, help="listen address (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=defaults.port, help="listen port (default %(default)s)"
    )
    parser.add_argument(
        "--storage-path",
        type=Path,
        default=Path(environ.get("STORAGE_PATH") or defaults.storage_path),
        help="persistent state directory [env STORAGE_PATH] (default %(default)s)",
    )
    parser.add_argument(
        "--mock-tdx-url",
        default=environ.get("MOCK_TDX_URL") or None,
        help="quote service used when configfs-tsm is absent: GET {URL}/attest/{report_data hex} "
        "[env MOCK_TDX_URL] (default: none)",
    )
    parser.add_argument(
        "--registry-url",
        default=environ.get("REGISTRY_URL") or defaults.registry_url,
        help="registry base URL [env REGISTRY_URL] (default %(default)s)",
    )
    parser.add_argument(
        "--configfs-tsm-path",
        type=Path,
        default=defaults.configfs_tsm_path,
        help="configfs-tsm report directory (default %(default)s)",
    )
    parser.add_argument(
        "--rtmr-sysfs-path",
        type=Path,
        default=Path(environ.get("RTMR_SYSFS_PATH") or defaults.rtmr_sysfs_path),
        help="the kernel's RTMR3 file (Linux >= 6.16, tdx_guest); without it RTMR3 is the "
        "simulator's at the mock TDX URL [env RTMR_SYSFS_PATH] (default %(default)s)",
    )
    parser.add_argument(
        "--registry-timeout",
        type=_positive,
        default=defaults.registry_timeout,
        help="seconds to wait for the registry (default %(default)s)",
    )
    parser.add_argument(
        "--registry-retry-initial",
        type=_positive,
        default=environ.get("REGISTRY_RETRY_INITIAL") or defaults.registry_retry_initial,
        help="seconds before the start-up comparison with the registry is tried again, "
        "doubling on each failure [env REGISTRY_RETRY_INITIAL] (default %(default)s)",
    )
    parser.add_argument(
        "--registry-retry-max",
        type=_positive,
        default=environ.get("REGISTRY_RETRY_MAX") or defaults.registry_retry_max,
        help="the longest wait between comparisons with the registry [env REGISTRY_RETRY_MAX] "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--quote-timeout",
        type=_positive,
        default=defaults.quote_timeout,
        help="seconds to wait for a quote (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=environ.get("LOG_LEVEL") or defaults.log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level [env LOG_LEVEL] (default %(default)s)",
    )
    parser.add_argument(
        "--ssh-listen",
        type=_ip_address,
        default=environ.get("SSH_LISTEN") or defaults.ssh_listen,
        help="address of the SSH setup access [env SSH_LISTEN] (default %(default)s)",
    )
    parser.add_argument(
        "--ssh-port",
        type=_port,
        default=environ.get("SSH_PORT") or defaults.ssh_port,
        help="port of the SSH setup access, open between configure and expose "
        "[env SSH_PORT] (default %(default)s)",
    )
    parser.add_argument(
        "--workload-port",
        type=_port,
        default=environ.get("WORKLOAD_PORT") or defaults.workload_port,
        help="port the exposed workload is served on over plain HTTP by the front, which adds "
        "x-instance-pubkey [env WORKLOAD_PORT] "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--workload-publish-host",
        type=_ip_address,
        default=environ.get("WORKLOAD_PUBLISH_HOST") or defaults.workload_publish_host,
        help="address the front serves the exposed workload on (both ports) "
        "[env WORKLOAD_PUBLISH_HOST] "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--workload-tls-port",
        type=_port,
        default=environ.get("WORKLOAD_TLS_PORT") or defaults.workload_tls_port,
        help="port the exposed workload is served on over TLS with the attested certificate "
        "[env WORKLOAD_TLS_PORT] (default %(default)s)",
    )
    parser.add_argument(
        "--workload-internal-port",
        type=_port,
        default=environ.get("WORKLOAD_INTERNAL_PORT") or defaults.workload_internal_port,
        help="port the container is published on, on 127.0.0.1 only, for the front to reach "
        "[env WORKLOAD_INTERNAL_PORT] (default %(default)s)",
    )
    parser.add_argument(
        "--no-plain-http",
        action="store_const",
        const=True,
        default=None,
        help="serve the exposed workload over TLS only: nothing listens on the workload port "
        "[env NO_PLAIN_HTTP, a boolean] (default: plain HTTP too)",
    )
    parser.add_argument(
        "--tls-hostnames",
        type=_hostnames,
        default=environ.get("TLS_HOSTNAMES") or ",".join(defaults.tls_hostnames),
        metavar="NAME[,NAME...]",
        help="DNS names and IP addresses the attested certificate names (subjectAltName) "
        "[env TLS_HOSTNAMES] (default 127.0.0.1,localhost)",
    )
    parser.add_argument(
        "--front-runtime-dir",
        type=_absolute_path,
        default=environ.get("FRONT_RUNTIME_DIR") or None,
        help="private directory (0700) on a tmpfs for the TLS key, its certificate and the "
        "front's files; must be outside the storage path; the service refuses to start "
        "otherwise [env FRONT_RUNTIME_DIR] (default /dev/shm/tdx-identity/front-<--port>)",
    )
    parser.add_argument(
        "--clear-mount-dir",
        type=_absolute_path,
        default=environ.get("CLEAR_MOUNT_DIR") or defaults.clear_mount_dir,
        help="where the encrypted store is mounted in clear; must be outside the storage "
        "path [env CLEAR_MOUNT_DIR] (default %(default)s)",
    )
    parser.add_argument(
        "--store-key-path",
        type=_absolute_path,
        default=environ.get("STORE_KEY_PATH") or defaults.store_key_path,
        help="file holding the encrypted store's random key (0600); must be outside the "
        "storage path [env STORE_KEY_PATH] (default %(default)s)",
    )
    parser.add_argument(
        "--container-name",
        type=_container_name,
        default=environ.get("CONTAINER_NAME") or defaults.container_name,
        help="name (and label value) of the workload container [env CONTAINER_NAME] "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--key-broker-url",
        type=_http_url,
        default=environ.get("KEY_BROKER_URL") or None,
        help="the owner's key broker (tdx-kbs, Trustee's KBS protocol): the store key is "
        "fetched from it against fresh evidence, kept in memory only, never written; "
        "measured into RTMR3 [env KEY_BROKER_URL] (default: none, a local key file at "
        "--store-key-path, which the host can read)",
    )
    parser.add_argument(
        "--key-broker-timeout",
        type=_positive,
        default=defaults.key_broker_timeout,
        help="seconds to wait for the key broker (default %(default)s)",
    )
    parser.add_argument(
        "--key-broker-retry-initial",
        type=_positive,
        default=environ.get("KEY_BROKER_RETRY_INITIAL") or defaults.key_broker_retry_initial,
        help="seconds before a locked workload's store key is asked for again, doubling on "
        "each failure, with jitter [env KEY_BROKER_RETRY_INITIAL] (default %(default)s)",
    )
    parser.add_argument(
        "--key-broker-retry-max",
        type=_positive,
        default=environ.get("KEY_BROKER_RETRY_MAX") or defaults.key_broker_retry_max,
        help="the longest wait between those attempts [env KEY_BROKER_RETRY_MAX] "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--accept-unsequenced-requests",
        action="store_true",
        default=None,
        help="also serve v1 owner bodies without seq and action, which can be replayed; "
        "logged as a warning at start and at every such request "
        "[env ACCEPT_UNSEQUENCED_REQUESTS: 1/0, true/false, yes/no, on/off; anything else "
        "stops the start] (default: refused with 400)",
    )
    parser.add_argument(
        "--accept-v1-signatures",
        action="store_true",
        default=None,
        help="also take v1 operator and owner signatures (over the raw instance key, naming no "
        "role) at registration and in the start-up comparison; logged as a warning at start "
        "and at every use [env ACCEPT_V1_SIGNATURES, a boolean] (default: refused with 401)",
    )
    hardening = parser.add_argument_group(
        "workload hardening",
        "podman's default seccomp profile, no-new-privileges, no privileged mode, no host "
        "network, a read-only root filesystem with a size-limited tmpfs /tmp, and no container "
        "logs are always enforced; these tune the rest",
    )
    hardening.add_argument(
        "--workload-cap-add",
        type=_capabilities,
        default=defaults.hardening.cap_add,
        metavar="CAP[,CAP...]",
        help="capabilities kept after dropping all (empty: none) "
        f"(default {','.join(sorted(DEFAULT_CAP_ADD))})",
    )
    hardening.add_argument(
        "--workload-pids-limit",
        type=_positive_int,
        default=defaults.hardening.pids_limit,
        help="maximum number of processes in the container (default %(default)s)",
    )
    hardening.add_argument(
        "--workload-memory-mb",
        type=_positive_int,
        default=(defaults.hardening.memory_bytes or 0) // (1024 * 1024),
        help="memory limit of the container in MiB, at least 6 (default %(default)s)",
    )
    add_connection_limit_flags(parser, defaults=defaults.limits)
    return parser


def _boolean(
    parser: argparse.ArgumentParser, flag: bool | None, environ: Mapping[str, str], name: str
) -> bool:
    """The flag when given, else the strict boolean environment variable `name` (usage error,
    exit 2, for any other value than 1/0, true/false, yes/no, on/off)."""
    if flag is not None:
        return flag
    try:
        return parse_bool(name, environ.get(name))
    except ValueError as exc:
        parser.error(str(exc))


def parse_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
    """Parse `argv` (None: sys.argv) over `environ` into Settings; exits 2 on a usage error."""
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        hardening = Hardening(
            cap_add=args.workload_cap_add,
            pids_limit=args.workload_pids_limit,
            memory_bytes=args.workload_memory_mb * 1024 * 1024,
        )
    except WorkloadConfigError as exc:
        parser.error(str(exc))
    accept_unsequenced = _boolean(
        parser, args.accept_unsequenced_requests, environ, "ACCEPT_UNSEQUENCED_REQUESTS"
    )
    accept_v1_signatures = _boolean(
        parser, args.accept_v1_signatures, environ, "ACCEPT_V1_SIGNATURES"
    )
    no_plain_http = _boolean(parser, args.no_plain_http, environ, "NO_PLAIN_HTTP")
    try:
        limits = with_connection_limits(Settings().limits, args)
    except ValueError as exc:
        parser.error(str(exc))
    ports = {
        "--workload-port": args.workload_port,
        "--workload-tls-port": args.workload_tls_port,
        "--workload-internal-port": args.workload_internal_port,
    }
    if no_plain_http:
        del ports["--workload-port"]
    if len(set(ports.values())) != len(ports):
        parser.error(f"the front's ports must differ: {ports}")
    return Settings(
        host=args.host,
        port=args.port,
        storage_path=args.storage_path,
        mock_tdx_url=args.mock_tdx_url.rstrip("/") if args.mock_tdx_url else None,
        registry_url=args.registry_url.rstrip("/"),
        configfs_tsm_path=args.configfs_tsm_path,
        rtmr_sysfs_path=args.rtmr_sysfs_path,
        registry_timeout=args.registry_timeout,
        registry_retry_initial=args.registry_retry_initial,
        registry_retry_max=max(args.registry_retry_initial, args.registry_retry_max),
        quote_timeout=args.quote_timeout,
        log_level=args.log_level,
        ssh_listen=args.ssh_listen,
        ssh_port=args.ssh_port,
        workload_port=args.workload_port,
        workload_publish_host=args.workload_publish_host,
        workload_tls_port=args.workload_tls_port,
        workload_internal_port=args.workload_internal_port,
        plain_http=not no_plain_http,
        tls_hostnames=args.tls_hostnames,
        front_runtime_dir=args.front_runtime_dir,
        clear_mount_dir=args.clear_mount_dir,
        store_key_path=args.store_key_path,
        container_name=args.container_name,
        key_broker_url=args.key_broker_url,
        key_broker_timeout=args.key_broker_timeout,
        key_broker_retry_initial=args.key_broker_retry_initial,
        key_broker_retry_max=max(args.key_broker_retry_initial, args.key_broker_retry_max),
        accept_unsequenced_requests=accept_unsequenced,
        accept_v1_signatures=accept_v1_signatures,
        hardening=hardening,
        limits=limits,
    )
