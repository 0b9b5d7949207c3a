"""Metric source for Kubernetes: PromQL over Prometheus's HTTP API (``/api/v1/query``).

Every router replica is scraped by Prometheus, so ``sum(increase(...[window]))`` already adds the
replicas up; the window is the analysis interval (or a metric's own ``interval_s``).
"""

from __future__ import annotations

import math

import httpx

from canary.analysis import MetricsSnapshot
from canary.promtext import (
    FALLBACKS,
    SHADOW_BITS,
    SHADOW_COMPARISONS,
    UPSTREAM_DURATION_BUCKET,
    UPSTREAM_REQUESTS,
)


class PrometheusError(RuntimeError):
    """Prometheus answered with an error or an unexpected shape."""


def _window(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def _sel(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' if not k.endswith("_re") else f'{k[:-3]}=~"{esc(v)}"'
                          for k, v in labels.items()) + "}"


def queries(route: str, canary_arm: str, window_s: float, canary_backend: str | None = None) -> dict[str, str]:
    """The PromQL of each snapshot field (public: the docs and tests show them)."""
    w = _window(window_s)
    arm = _sel(route=route, arm=canary_arm)
    shadow = {"route": route, "shadow": canary_arm}
    errors = _sel(route=route, arm=canary_arm, outcome_re="error|timeout")
    out = {
        "requests": f"sum(increase({UPSTREAM_REQUESTS}{arm}[{w}]))",
        "errors": f"sum(increase({UPSTREAM_REQUESTS}{errors}[{w}]))",
        "p99_s": f"histogram_quantile(0.99, sum by (le) (rate({UPSTREAM_DURATION_BUCKET}{arm}[{w}])))",
        "decisions_compared": f"sum(increase({SHADOW_COMPARISONS}{_sel(**shadow)}[{w}]))",
        "decisions_agreed": f"sum(increase({SHADOW_COMPARISONS}{_sel(**shadow, agreement='true')}[{w}]))",
        "bits_compared": f"sum(increase({SHADOW_BITS}{_sel(**shadow)}[{w}]))",
        "bits_agreed": f"sum(increase({SHADOW_BITS}{_sel(**shadow, result='agree')}[{w}]))",
    }
    if canary_backend:
        out["fallbacks"] = f"sum(increase({FALLBACKS}{_sel(route=route, from_backend=canary_backend)}[{w}]))"
    return out


class PrometheusSource:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s

    async def query(self, promql: str) -> float | None:
        """An instant query's single value; None for an empty result or NaN (no data)."""
        resp = await self._http.get(f"{self._base}/api/v1/query", params={"query": promql}, timeout=self._timeout_s)
        try:
            body = resp.json()
        except ValueError as exc:
            raise PrometheusError(f"Prometheus answered {resp.status_code} with non-JSON for {promql!r}") from exc
        if resp.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed ({resp.status_code}): {body.get('error', body)}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise PrometheusError(f"expected a vector for {promql!r}, got {data['resultType']}")
        if not data["result"]:
            return None
        if len(data["result"]) != 1:
            raise PrometheusError(f"expected one series for {promql!r}, got {len(data['result'])}")
        value = float(data["result"][0]["value"][1])
        return None if math.isnan(value) else value

    async def mark(self) -> None:
        """Nothing to do: the query window is the interval just ended."""

    async def snapshot(self, route: str, canary_arm: str, window_s: float,
                       canary_backend: str | None = None) -> MetricsSnapshot:
        values = {name: await self.query(q) for name, q in queries(route, canary_arm, window_s, canary_backend).items()}
        p99_s = values.pop("p99_s")
        counts = {k: v or 0.0 for k, v in values.items()}
        return MetricsSnapshot(window_s=window_s, p99_ms=None if p99_s is None else p99_s * 1000.0, **counts)
