"""Active health checks: probe every replica's readiness on a period, off the request path.

A replica is marked unhealthy after `unhealthy_threshold` consecutive failed probes (Envoy's
health-check thresholds) and healthy again after `healthy_threshold` consecutive passes. One
slow probe must not take out a replica: under a load spike an overloaded pod answers its probe
late, and marking the only replica of a backend down then turns a slowdown into an outage. Passive
outlier ejection (router.balancer) covers failures between probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from router.balancer import Balancer, Endpoint

log = logging.getLogger(__name__)

Probe = Callable[[str], Awaitable[bool]]


class HealthChecker:
    """``probe_for(backend)`` gives the probe of a backend's kind (hasher / explainer), or None."""

    def __init__(self, balancer: Balancer, probe_for: Callable[[str], Probe | None], interval_s: float,
                 timeout_s: float, *, unhealthy_threshold: int = 3, healthy_threshold: int = 1) -> None:
        if unhealthy_threshold < 1 or healthy_threshold < 1:
            raise ValueError("health thresholds must be >= 1")
        self._unhealthy_threshold = unhealthy_threshold
        self._healthy_threshold = healthy_threshold
        # (backend, url) -> consecutive probe results that disagree with the replica's current state
        self._streaks: dict[tuple[str, str], int] = {}
        self._balancer = balancer
        self._probe_for = probe_for
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self.rounds = 0

    async def _check(self, backend: str, endpoint: Endpoint, probe: Probe) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                ok = await probe(endpoint.url)
        except TimeoutError:
            ok = False
        except Exception as exc:  # a probe must never kill the checker; the replica counts as down
            log.warning("health probe of %s (%s) raised: %s", endpoint.url, backend, exc)
            ok = False
        key = (backend, endpoint.url)
        if ok == endpoint.healthy:
            self._streaks.pop(key, None)
            return
        streak = self._streaks.get(key, 0) + 1
        if streak < (self._healthy_threshold if ok else self._unhealthy_threshold):
            self._streaks[key] = streak
            return
        self._streaks.pop(key, None)
        log.info("replica %s of %s is now %s", endpoint.url, backend, "healthy" if ok else "unhealthy")
        endpoint.healthy = ok

    async def check_all(self) -> None:
        checks = []
        for backend, pool in list(self._balancer.pools.items()):
            probe = self._probe_for(backend)
            if probe is None:
                continue
            checks.extend(self._check(backend, ep, probe) for ep in list(pool.endpoints.values()))
        if checks:
            await asyncio.gather(*checks)
        self.rounds += 1

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._interval_s)
