"""Where a canary's metrics come from: one file per source behind :class:`MetricSource`.

- :mod:`.router_metrics` scrapes the routers' own ``/metrics`` (the local stack);
- :mod:`.prometheus` asks Prometheus over its HTTP API (Kubernetes).
"""

from __future__ import annotations

from typing import Protocol

from canary.analysis import MetricsSnapshot


class MetricSource(Protocol):
    async def mark(self) -> None:
        """Start an interval now (the local source takes its baseline scrape)."""

    async def snapshot(self, route: str, canary_arm: str, window_s: float,
                       canary_backend: str | None = None) -> MetricsSnapshot:
        """The canary arm's metrics since the last :meth:`mark` (or over the last ``window_s``)."""
