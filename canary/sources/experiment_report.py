"""Metric source decorator: the canary's FRR/FAR differences from the router's experiment report.

Wraps another source (router metrics or Prometheus) and adds, to each snapshot, the subject-level
``canary - stable`` difference of FRR and FAR that ``GET /v1/experiments/{name}`` computes from
labelled outcomes (since the canary started). The report compares every arm with the policy's
first arm; a comparison against another arm is not the stable one and is left out.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from canary.analysis import MetricsSnapshot
from canary.error_gates import RateDifference
from canary.sources import MetricSource


def differences(report: Mapping, stable_arm: str | None, canary_arm: str) -> dict[str, RateDifference]:
    """``{"frr": ..., "far": ...}`` from a report's JSON (pure); ``stable_arm`` None: the report's control."""
    out: dict[str, RateDifference] = {}
    for c in report.get("comparisons", []):
        if c.get("metric") not in ("frr", "far") or c.get("treatment") != canary_arm:
            continue
        if stable_arm is not None and c.get("control") != stable_arm:
            continue
        if c.get("difference") is None or c.get("standard_error") is None:
            continue
        out[c["metric"]] = RateDifference(float(c["difference"]), float(c["standard_error"]), int(c["subjects"]))
    return out


class ExperimentReportSource:
    def __init__(self, inner: MetricSource, http: httpx.AsyncClient, router_url: str, experiment: str,
                 stable_arm: str | None, api_key: str, *, since: float | None = None, timeout_s: float = 30.0) -> None:
        self._inner = inner
        self._http = http
        self._url = f"{router_url.rstrip('/')}/v1/experiments/{experiment}"
        self._stable = stable_arm
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._since = since
        self._timeout_s = timeout_s

    async def mark(self) -> None:
        await self._inner.mark()

    async def snapshot(self, route: str, canary_arm: str, window_s: float,
                       canary_backend: str | None = None) -> MetricsSnapshot:
        snap = await self._inner.snapshot(route, canary_arm, window_s, canary_backend)
        params = {"since": self._since} if self._since is not None else {}
        resp = await self._http.get(self._url, params=params, headers=self._headers, timeout=self._timeout_s)
        resp.raise_for_status()
        diffs = differences(resp.json(), self._stable, canary_arm)
        return MetricsSnapshot(**{**snap.__dict__, "error_differences": diffs})
