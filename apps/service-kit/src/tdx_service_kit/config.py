"""HTTP limits and rate limits as values, passed to `install_common`, and the one strict
reading of a boolean setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


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
    """Body size limit and the server's timeouts, in bytes and seconds."""

    max_body_bytes: int = 64 * 1024
    request_timeout: float = 30.0
    response_timeout: float = 60.0
    keep_alive_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        for name in ("request_timeout", "response_timeout", "keep_alive_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


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
