"""Replica selection for each backend: power of two choices, outlier ejection, retry budgets.

``Balancer.pick(backend, exclude) -> Endpoint``: two random available replicas, the one with fewer
requests in flight wins (Mitzenmacher's power of two choices: nearly the balance of
least-loaded at the cost of two reads). A replica is available when it is not ejected and its
last active health check did not fail.

Passive outlier ejection: ``consecutive_failures`` failures in a row eject a replica for
``base * 2^(n-1)`` seconds (n = times ejected in a row, capped), after which it is re-admitted
by time alone; a success resets the streak. Pure bookkeeping, no I/O; the clock is injectable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class Endpoint:
    url: str
    inflight: int = 0
    consecutive_failures: int = 0
    ejections_in_a_row: int = 0
    ejected_until: float = 0.0
    healthy: bool | None = None  # None until the first active check: assumed usable

    def available(self, now: float) -> bool:
        return now >= self.ejected_until and self.healthy is not False


class RetryBudget:
    """Retries allowed = ``min_per_s * window + ratio * requests`` over a sliding window.

    Like Finagle's and Linkerd's budgets: during an outage every request fails, and without a
    budget each would be retried ``max_retries`` times, multiplying the load on what is left.
    """

    def __init__(self, ratio: float, min_per_s: float, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio, self.min_per_s, self.window_s = ratio, min_per_s, window_s
        self._clock = clock
        self._slots: dict[int, list[int]] = {}  # whole second -> [requests, retries]

    def _slot(self) -> list[int]:
        now = int(self._clock())
        horizon = now - int(self.window_s)
        for sec in [s for s in self._slots if s <= horizon]:
            del self._slots[sec]
        return self._slots.setdefault(now, [0, 0])

    def on_request(self) -> None:
        self._slot()[0] += 1

    def try_spend(self) -> bool:
        slot = self._slot()
        requests = sum(s[0] for s in self._slots.values())
        retries = sum(s[1] for s in self._slots.values())
        if retries + 1 > self.min_per_s * self.window_s + self.ratio * requests:
            return False
        slot[1] += 1
        return True


class BackendPool:
    """The replicas of one backend; replacing the URL set keeps the state of URLs that stay."""

    def __init__(self, name: str, budget: RetryBudget) -> None:
        self.name = name
        self.budget = budget
        self.endpoints: dict[str, Endpoint] = {}

    def set_urls(self, urls: Iterable[str]) -> None:
        urls = [u.rstrip("/") for u in urls]
        self.endpoints = {u: self.endpoints.get(u) or Endpoint(u) for u in urls}


class Balancer:
    def __init__(
        self,
        *,
        consecutive_failures: int,
        base_ejection_s: float,
        max_ejection_s: float,
        budget_factory: Callable[[], RetryBudget],
        on_eject: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.pools: dict[str, BackendPool] = {}
        self._threshold = consecutive_failures
        self._base = base_ejection_s
        self._max = max_ejection_s
        self._budget_factory = budget_factory
        self._on_eject = on_eject or (lambda _b: None)
        self._clock = clock
        self._rng = rng or random.Random()

    def set_endpoints(self, backend: str, urls: Iterable[str]) -> None:
        pool = self.pools.get(backend)
        if pool is None:
            pool = self.pools[backend] = BackendPool(backend, self._budget_factory())
        pool.set_urls(urls)

    def remove(self, backend: str) -> None:
        self.pools.pop(backend, None)

    def pool(self, backend: str) -> BackendPool | None:
        return self.pools.get(backend)

    def budget(self, backend: str) -> RetryBudget:
        pool = self.pools.get(backend)
        if pool is None:
            pool = self.pools[backend] = BackendPool(backend, self._budget_factory())
        return pool.budget

    def available(self, backend: str) -> list[Endpoint]:
        pool = self.pools.get(backend)
        if pool is None:
            return []
        now = self._clock()
        return [e for e in pool.endpoints.values() if e.available(now)]

    def pick(self, backend: str, exclude: Iterable[str] = ()) -> Endpoint | None:
        """Power of two choices over available replicas not in ``exclude``; None if there is none."""
        excluded = set(exclude)
        candidates = [e for e in self.available(backend) if e.url not in excluded]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        return a if a.inflight <= b.inflight else b

    def report_success(self, backend: str, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.ejections_in_a_row = 0

    def report_failure(self, backend: str, endpoint: Endpoint) -> bool:
        """Count a failure; True when it ejected the replica."""
        endpoint.consecutive_failures += 1
        now = self._clock()
        if endpoint.consecutive_failures < self._threshold or now < endpoint.ejected_until:
            return False
        endpoint.ejections_in_a_row += 1
        endpoint.consecutive_failures = 0
        duration = min(self._max, self._base * 2 ** (endpoint.ejections_in_a_row - 1))
        endpoint.ejected_until = now + duration
        self._on_eject(backend)
        return True

    def describe(self, backend: str) -> str:
        """Why a backend cannot serve, for the 503 message: its replicas and their state."""
        pool = self.pools.get(backend)
        if pool is None or not pool.endpoints:
            return "no replicas discovered"
        now = self._clock()
        states = []
        for e in pool.endpoints.values():
            if now < e.ejected_until:
                states.append(f"{e.url} ejected {e.ejected_until - now:.1f}s more")
            elif e.healthy is False:
                states.append(f"{e.url} failing health checks")
            else:
                states.append(f"{e.url} available")
        return ", ".join(states)
