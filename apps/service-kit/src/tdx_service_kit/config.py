"""HTTP limits and rate limits as values, passed to `install_common`."""

from __future__ import annotations

from dataclasses import dataclass


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
