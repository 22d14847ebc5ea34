"""Per-client rate limiting: one token bucket per client key, pure and clock-injected.

Each client has a bucket of ``burst`` tokens that refills at ``rate_per_s``; a request takes one
token or is refused with how long until one is there. Memory stays bounded:

1. a bucket idle long enough to be full again is forgotten, since a fresh bucket is full too;
   forgetting it changes no answer;
2. buckets are kept in order of last use, so (1) only ever looks at the oldest ones;
3. past ``max_clients`` the least recently used bucket is forgotten even if not yet full (that
   client gets a full bucket back: a bounded leniency, never a wrong refusal).

No I/O and no locks: the gateway calls it from its event loop only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds on a monotonic scale, e.g. :func:`time.monotonic`."""


@dataclass(frozen=True)
class RateDecision:
    """The answer for one request: allowed, or how long until it would be."""

    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` as HTTP wants it: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Token buckets by client key; :meth:`acquire` answers one request at a time."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        #: How long an untouched bucket takes to be full again, from empty.
        self._refill_s = self._burst / self._rate
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._buckets)

    def acquire(self, client: str) -> RateDecision:
        """Take one token from ``client``'s bucket, or say how long until one is there."""
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
            self._buckets[client] = bucket
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.updated)  # a clock that steps back refills nothing
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.updated = max(bucket.updated, now)
            self._buckets.move_to_end(client)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after_s=(1.0 - bucket.tokens) / self._rate)

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.updated < self._refill_s:
                return
            self._buckets.popitem(last=False)
