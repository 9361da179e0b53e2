"""Settings of the identity service, parsed once from flags and environment, then passed down."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tdx_service_kit import HttpLimits, RateLimit

DEFAULT_CONFIGFS_TSM_PATH = Path("/sys/kernel/config/tsm/report")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Flags win over environment variables."""

    host: str = "127.0.0.1"
    port: int = 3001
    storage_path: Path = Path("/mnt")
    mock_tdx_url: str | None = None
    registry_url: str = "http://localhost:3000"
    configfs_tsm_path: Path = DEFAULT_CONFIGFS_TSM_PATH
    registry_timeout: float = 15.0
    quote_timeout: float = 15.0
    log_level: str = "INFO"
    limits: HttpLimits = field(default_factory=HttpLimits)
    rate_limit: RateLimit | None = field(default_factory=RateLimit)


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
        "--registry-timeout",
        type=_positive,
        default=defaults.registry_timeout,
        help="seconds to wait for the registry (default %(default)s)",
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
    return parser


def parse_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
    """Parse `argv` (None: sys.argv) over `environ` into Settings; exits 2 on a usage error."""
    args = build_parser(environ).parse_args(argv)
    return Settings(
        host=args.host,
        port=args.port,
        storage_path=args.storage_path,
        mock_tdx_url=args.mock_tdx_url.rstrip("/") if args.mock_tdx_url else None,
        registry_url=args.registry_url.rstrip("/"),
        configfs_tsm_path=args.configfs_tsm_path,
        registry_timeout=args.registry_timeout,
        quote_timeout=args.quote_timeout,
        log_level=args.log_level,
    )
