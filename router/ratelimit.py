"""Per-key token buckets: ``rate_per_s`` tokens a second up to ``burst``; empty -> 429 + Retry-After."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Limiter(Protocol):
    """What the authenticator asks: this one in-process, router.ratelimit_store's shared by replicas."""

    def check(self, key: str, rate_per_s: float, burst: float) -> float:
        """0 when the request may go; otherwise the wait in seconds (for Retry-After)."""


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; return 0 when granted, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s if self.rate_per_s > 0 else math.inf


class RateLimiter:
    """One bucket per key name. Single event loop: no lock needed (no await between read and write)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, rate_per_s: float, burst: float) -> float:
        """0 when the request may go; otherwise the wait in seconds (for Retry-After)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate_per_s != rate_per_s or bucket.burst != burst:
            bucket = TokenBucket(rate_per_s, burst, burst, now)
            self._buckets[key] = bucket
        return bucket.take(now)
