"""HTTP limits and rate limits as values, passed to `install_common`, the one strict reading
of a boolean setting, and where an app's database is (`DatabaseTarget`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
MAX_REQUEST_DEADLINE: Final = 3600.0


def parse_bool(name: str, value: str | None, *, default: bool = False) -> bool:
    """A boolean setting: `default` when unset (None), else one of true/false, 1/0, yes/no,
    on/off (any case, surrounding blanks ignored). Anything else, an empty value included,
    raises ValueError naming the setting: a typo such as ``SKIP_TDX_AUTH=disabled`` must stop
    the program, never be read as either answer."""
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise ValueError(
        f"{name}={shown!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off, "
        "or leave it unset"
    )


@dataclass(frozen=True)
class HttpLimits:
    """Body size limit, the server's timeouts and connection caps, in bytes and seconds.

    `request_timeout`, `response_timeout` and `keep_alive_timeout` are Sanic's idle timers
    (every byte received resets them). `request_deadline` is the total time a request's head
    and body may take to arrive from its first byte, whatever the pace (408, then close).
    `max_connections_per_client` caps the concurrent connections of one client IP (the excess
    is refused at accept with a 503). Both need the service to be served by `run_app` or
    `tdx_service_kit.testing.serve`.
    """

    max_body_bytes: int = 64 * 1024
    request_timeout: float = 30.0
    response_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    request_deadline: float = 30.0
    max_connections_per_client: int = 64

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        for name in ("request_timeout", "response_timeout", "keep_alive_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.request_deadline <= MAX_REQUEST_DEADLINE:
            raise ValueError(f"request_deadline must be in (0, {MAX_REQUEST_DEADLINE:g}] seconds")
        if self.max_connections_per_client < 1:
            raise ValueError("max_connections_per_client must be at least 1")


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client IP: `burst` requests at once, refilled at `per_second`."""

    per_second: float = 50.0
    burst: int = 100

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ValueError("per_second must be positive")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")


@dataclass(frozen=True)
class DatabaseTarget:
    """Where an app's state lives (the registry's records, the key broker's resources): an
    SQLite file, or a PostgreSQL URL (`postgresql://...`)."""

    sqlite_path: Path | None = None
    postgres_url: str | None = None

    def __post_init__(self) -> None:
        if (self.sqlite_path is None) == (self.postgres_url is None):
            raise ValueError("exactly one of sqlite_path and postgres_url must be given")
        if self.sqlite_path is not None and not self.sqlite_path.is_absolute():
            raise ValueError("sqlite_path must be absolute (Pony resolves relative paths oddly)")
        if self.postgres_url is not None and urlsplit(self.postgres_url).scheme not in (
            "postgres",
            "postgresql",
        ):
            raise ValueError("the database URL must start with postgresql://")

    def describe(self) -> str:
        """A loggable description (no password)."""
        if self.sqlite_path is not None:
            return f"sqlite:{self.sqlite_path}"
        parts = urlsplit(self.postgres_url or "")
        host = parts.hostname or "localhost"
        return f"postgresql://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def add_connection_limit_flags(
    parser: argparse.ArgumentParser, *, defaults: HttpLimits | None = None
) -> None:
    """Add ``--request-deadline`` and ``--max-connections-per-client`` to a service's parser;
    `with_connection_limits` reads them back."""
    base = defaults or HttpLimits()
    parser.add_argument(
        "--request-deadline",
        type=float,
        default=base.request_deadline,
        metavar="SECONDS",
        help="total seconds a request's head and body may take to arrive, whatever the pace "
        "(then 408 and close; default %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-client",
        type=int,
        default=base.max_connections_per_client,
        metavar="N",
        help="concurrent connections per client IP; more are refused with a 503 at accept "
        "(default %(default)s)",
    )


def with_connection_limits(limits: HttpLimits, args: argparse.Namespace) -> HttpLimits:
    """`limits` with the values of `add_connection_limit_flags`' flags (ValueError if out of
    range)."""
    return replace(
        limits,
        request_deadline=args.request_deadline,
        max_connections_per_client=args.max_connections_per_client,
    )
