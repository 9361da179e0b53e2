"""The registry's single-use registration challenges (GET /challenge), kept in the database so
that every replica sharing it accepts each nonce once.

A nonce is 32 random bytes, valid for `ttl` seconds, consumed by the first v2 registration that
names it, whatever that registration's outcome; at most `max_outstanding` unexpired nonces exist
at a time, so an anonymous caller cannot fill the database.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .store import RecordStore

NONCE_LEN = 32
DEFAULT_TTL_SECONDS = 60
MIN_TTL_SECONDS = 5
MAX_TTL_SECONDS = 600
DEFAULT_MAX_OUTSTANDING = 10_000
REFUSED = (
    "challenge unknown, expired or already used: fetch a fresh one from GET /challenge for "
    "every registration"
)


class ChallengeRefused(Exception):
    """The registration names a challenge that is unknown, expired or already used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChallengesExhausted(Exception):
    """`max_outstanding` unexpired challenges exist; the caller may retry after `retry_after`
    seconds (when the newest of them has expired at the latest)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many outstanding challenges")
        self.retry_after = retry_after


@dataclass(frozen=True)
class ChallengeSettings:
    """How long a challenge lives and how many may be outstanding."""

    ttl: int = DEFAULT_TTL_SECONDS
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING

    def __post_init__(self) -> None:
        if not MIN_TTL_SECONDS <= self.ttl <= MAX_TTL_SECONDS:
            raise ValueError(
                f"the challenge TTL must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds, "
                f"not {self.ttl}"
            )
        if self.max_outstanding < 1:
            raise ValueError("the cap on outstanding challenges must be at least 1")


@dataclass(frozen=True)
class Challenge:
    """An issued nonce and the moment it expires (whole seconds, UTC)."""

    nonce: bytes
    expires_at: datetime

    def to_object(self) -> dict[str, str]:
        """The wire form: `{"nonce": hex, "expires_at": RFC 3339 UTC}`."""
        return {
            "nonce": self.nonce.hex(),
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class Challenges:
    """Issues and consumes challenges in the record store's database, on `clock`'s time."""

    def __init__(
        self, store: RecordStore, settings: ChallengeSettings, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    async def issue(self) -> Challenge:
        """A fresh nonce, stored until it expires; `ChallengesExhausted` at the cap."""
        now = self._clock()
        expires_at = (now + timedelta(seconds=self._settings.ttl)).replace(microsecond=0)
        nonce = secrets.token_bytes(NONCE_LEN)
        stored = await self._store.issue_challenge(
            nonce, expires_at, now=now, max_outstanding=self._settings.max_outstanding
        )
        if not stored:
            raise ChallengesExhausted(retry_after=self._settings.ttl)
        return Challenge(nonce, expires_at)

    async def consume(self, nonce: bytes) -> None:
        """Use up `nonce`; `ChallengeRefused` unless this call is the first to name it before
        it expired."""
        if not await self._store.consume_challenge(nonce, now=self._clock()):
            raise ChallengeRefused(REFUSED)

    async def check(self, nonce: bytes) -> datetime:
        """The time at which `nonce` was found stored and unexpired (`ChallengeRefused` if it
        is not): a read, the nonce stays (the registration's own transaction consumes it as of
        that time, see `Registrar.register`)."""
        now = self._clock()
        if not await self._store.challenge_open(nonce, now=now):
            raise ChallengeRefused(REFUSED)
        return now
