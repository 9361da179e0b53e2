"""Per-client token buckets, held by one app instance (never module-global)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from .config import RateLimit

DEFAULT_MAX_CLIENTS = 10_000


class TokenBuckets:
    """Token buckets keyed by client, at most `max_clients` of them (least recently seen dropped).

    Dropping a bucket under a flood of distinct clients only ever refills it, so the bound costs
    at most one extra burst per evicted client; it keeps memory flat whatever the clients do.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> int:
        """Spend one token of `client`; return 0 if allowed, else the seconds to wait (>= 1)."""
        now = self._clock()
        burst = float(self._limit.burst)
        tokens, last = self._buckets.pop(client, (burst, now))
        tokens = min(burst, tokens + (now - last) * self._limit.per_second)
        wait = 0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self._limit.per_second))
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
