"""A per-process cache of serialized GET /instance answers, bounded in bytes and in age.

Staleness bound: an answer is served from the cache for at most `ttl` seconds after the
database read that produced it began, so it can miss a registration committed by another
process (another replica sharing the database) during at most those `ttl` seconds. Writes of
this process invalidate the instance's entry, and a read that was in flight when the instance
was written is not cached, so once this process has answered a registration, none of its GETs
serves the state from before it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

DEFAULT_TTL_SECONDS = 1.0
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


@dataclass(eq=False)
class _Fill:
    """A database read whose answer may be cached unless its instance is written meanwhile."""

    started: float
    valid: bool = True


class ReadCache:
    """Answers keyed by instance public key, least recently used evicted past `max_bytes`;
    answers past their TTL, which can never be served, are dropped whenever another is cached
    (so under reads of many distinct instances the cache holds the last TTL's answers, not
    `max_bytes` of dead ones).

    `ttl <= 0` or `max_bytes <= 0` disables it: every lookup goes to the loader. Not thread-safe:
    use it from the event loop only.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._clock = clock
        self._enabled = ttl > 0 and max_bytes > 0
        self._entries: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._fills: dict[bytes, list[_Fill]] = {}

    @property
    def enabled(self) -> bool:
        """Whether answers are cached at all."""
        return self._enabled

    @property
    def size_bytes(self) -> int:
        """Total size of the cached answers."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> bytes | None:
        """The cached answer for `key` if it is younger than the TTL."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def get_or_load(
        self, key: bytes, load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """The cached answer for `key`, else `load()`'s, cached unless None or `key` was
        invalidated while it ran."""
        cached = self.get(key)
        if cached is not None or not self._enabled:
            return cached if cached is not None else await load()
        fill = _Fill(started=self._clock())
        fills = self._fills.setdefault(key, [])
        fills.append(fill)
        try:
            body = await load()
        finally:
            fills.remove(fill)
            if not fills:
                del self._fills[key]
        if body is not None and fill.valid:
            self._put(key, body, expires=fill.started + self._ttl)
        return body

    def invalidate(self, key: bytes) -> None:
        """Forget `key`'s answer, and keep reads of it now in flight from caching theirs."""
        self._drop(key)
        for fill in self._fills.get(key, ()):
            fill.valid = False

    def _put(self, key: bytes, body: bytes, *, expires: float) -> None:
        if len(body) > self._max_bytes or expires <= self._clock():
            return
        self._drop(key)
        self._drop_expired()
        self._entries[key] = (body, expires)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            _, (evicted, _) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def _drop_expired(self) -> None:
        """Drop the least recently used answers while they are past their TTL. Every answer
        expires at most `ttl` after its last use, and so does each one used before it: an
        answer is gone by the first `_put` `ttl` after its last use (amortized O(1))."""
        now = self._clock()
        while self._entries:
            key, (_, expires) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
