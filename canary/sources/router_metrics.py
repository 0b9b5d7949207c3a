"""Metric source for the local stack: the routers' own ``/metrics``, diffed between intervals.

No Prometheus is needed locally: the controller scrapes every router replica at ``mark()`` and
again at ``snapshot()``, adds the replicas up and diffs (see :mod:`canary.promtext`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from canary.analysis import MetricsSnapshot
from canary.promtext import Samples, canary_snapshot, delta, merge, parse_samples


class RouterMetricsSource:
    def __init__(self, http: httpx.AsyncClient, router_urls: Sequence[str], *, timeout_s: float = 5.0) -> None:
        if not router_urls:
            raise ValueError("at least one router URL is needed")
        self._http = http
        self._urls = [u.rstrip("/") for u in router_urls]
        self._timeout_s = timeout_s
        self._baseline: Samples | None = None

    async def scrape(self) -> Samples:
        """All replicas' samples, summed. Raises httpx.HTTPError when a replica cannot be read."""

        async def one(url: str) -> Samples:
            resp = await self._http.get(f"{url}/metrics", timeout=self._timeout_s)
            resp.raise_for_status()
            return parse_samples(resp.text)

        return merge(*await asyncio.gather(*(one(u) for u in self._urls)))

    async def mark(self) -> None:
        self._baseline = await self.scrape()

    async def snapshot(self, route: str, canary_arm: str, window_s: float,
                       canary_backend: str | None = None) -> MetricsSnapshot:
        end = await self.scrape()
        # Without a baseline (first interval after a restart) everything since the router started
        # would count; take the baseline now and report an empty interval: the analysis holds.
        start = self._baseline if self._baseline is not None else end
        self._baseline = end
        return canary_snapshot(delta(end, start), route, canary_arm, window_s, canary_backend)
