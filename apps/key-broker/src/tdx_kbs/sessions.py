"""The in-memory session table of the RCAR handshake: one session per `POST /kbs/v0/auth`,
identified by the random `kbs-session-id` cookie, attested at most once, gone after its TTL.

Sessions live only in this process's memory (a restart forgets them: the guest runs the
handshake again). The table is capped: past `max_sessions` unexpired sessions, `auth` is
refused with `SessionsExhausted` (503 with Retry-After) instead of growing without bound;
expired sessions are purged on every `open` and on lookup.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_SESSIONS: Final = 10_000
SESSION_ID_BYTES: Final = 24
"""192 random bits, URL-safe base64 (the cookie value)."""


class SessionError(Exception):
    """A session operation the broker refuses; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionNotFound(SessionError):
    """No cookie, or a cookie naming no live session (unknown or expired)."""


class SessionAlreadyAttested(SessionError):
    """A second attest on one session: its nonce is single use."""


class SessionNotAttested(SessionError):
    """A resource request on a session whose attestation did not (yet) succeed."""


class SessionsExhausted(SessionError):
    """The cap of live sessions is reached; `retry_after` seconds until one expires."""

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True)
class SessionSettings:
    """How long a session lives and how many may be live at once."""

    ttl: int = 300
    max_sessions: int = DEFAULT_MAX_SESSIONS

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError("the session TTL must be positive")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")


@dataclass
class Session:
    """One handshake: its nonce, then the token of its one successful attest."""

    id: str
    nonce: str
    expires_at: float
    attested: bool = False
    attempted: bool = False
    """An attest was tried on this session (whatever its outcome): the nonce is spent."""
    token: str = ""
    """The attestation token of a successful attest (its claims decide each release)."""


class SessionTable:
    """Live sessions by id, oldest first, in this process's memory."""

    def __init__(self, settings: SessionSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @property
    def ttl(self) -> int:
        return self._settings.ttl

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now:
                return
            del self._sessions[oldest.id]

    def open(self, nonce: str) -> Session:
        """A new unattested session for `nonce`, or `SessionsExhausted` at the cap."""
        now = self._clock()
        self._purge(now)
        if len(self._sessions) >= self._settings.max_sessions:
            oldest = next(iter(self._sessions.values()))
            raise SessionsExhausted(
                "too many open sessions: retry after the Retry-After seconds",
                retry_after=int(oldest.expires_at - now) + 1,
            )
        session = Session(
            id=secrets.token_urlsafe(SESSION_ID_BYTES),
            nonce=nonce,
            expires_at=now + self._settings.ttl,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session:
        """The live session `session_id` names, or `SessionNotFound`."""
        if not session_id:
            raise SessionNotFound("no kbs-session-id cookie: POST /kbs/v0/auth first")
        now = self._clock()
        self._purge(now)
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= now:
            raise SessionNotFound("the session is unknown or expired: POST /kbs/v0/auth again")
        return session

    def begin_attest(self, session_id: str | None) -> Session:
        """The live session for an attest, marked as spent; `SessionAlreadyAttested` when an
        attest was already tried on it (the nonce is single use, whatever that outcome was)."""
        session = self.get(session_id)
        if session.attempted:
            raise SessionAlreadyAttested(
                "this session's nonce was already used: POST /kbs/v0/auth for a new one"
            )
        session.attempted = True
        return session
