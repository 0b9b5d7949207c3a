"""Prometheus mode: a real Prometheus scrapes two real router replicas; the canary reads PromQL.

The two routers share one policy file (as pods share a ConfigMap): the admin API of one writes
it, the other hot-reloads it. Traffic goes to both; only Prometheus sees the sum.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from canary.actuators.admin_api import AdminApiActuator
from canary.analysis import CanaryAnalysis
from canary.controller import CanaryController
from canary.sources.prometheus import PrometheusSource
from canary.state import StateStore
from load_tests.canary_traffic import Subject, VerifyTraffic
from tests.canary.procs import ADMIN_KEY, CLIENT_KEY, mini_stack, weights
from tests.observability.prom_server import PrometheusServer, ScrapeTarget, prometheus_binary

pytestmark = [
    pytest.mark.slow, pytest.mark.e2e,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus missing: apt-get install -y prometheus"),
]

ANALYSIS = CanaryAnalysis.model_validate({
    "intervalS": 4, "threshold": 2, "stepWeight": 50, "maxWeight": 100, "minRequests": 3,
    "metrics": [{"name": "error-rate", "thresholdRange": {"max": 5}},
                {"name": "request-duration", "thresholdRange": {"max": 200}}],
})


async def drive(stack, prom_url: str, state_dir: Path) -> tuple:
    images = [base64.b64encode(f"face-{i}".encode()).decode() for i in range(30)]
    subjects = [Subject(f"p{i}", images[i], images[i]) for i in range(30)]
    async with httpx.AsyncClient() as http:
        source = PrometheusSource(http, prom_url)
        ctl = CanaryController(ANALYSIS, source, AdminApiActuator(http, stack.routers[0], ADMIN_KEY),
                               StateStore(state_dir))
        stop = asyncio.Event()
        loads = [VerifyTraffic(http, url, CLIENT_KEY, "face", subjects, rate_per_s=6, seed=i)
                 for i, url in enumerate(stack.routers)]
        tasks: list[asyncio.Task] = []

        async def after_begin(_state) -> None:
            await asyncio.sleep(0.5)  # both replicas have reloaded the first weights
            for load in loads:  # each replica has its own audit/template database here
                assert await load.enrol() == len(subjects)
            tasks.extend(asyncio.create_task(t.run(stop)) for t in loads)

        try:
            state = await ctl.run("face", "v1", "v2", after_begin=after_begin)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        return state, loads


def test_canary_reads_prometheus_and_moves_both_replicas(tmp_path: Path) -> None:
    with mini_stack(tmp_path / "stack", replicas=2) as stack:
        targets = [ScrapeTarget(url=u, job="servestack-router", labels={"replica": str(i)})
                   for i, u in enumerate(stack.routers)]
        with PrometheusServer(targets, scrape_interval_s=1) as prom:
            prom.wait_for_targets_up()
            state, loads = asyncio.run(drive(stack, prom.url, tmp_path / "canary"))
            assert state.phase == "succeeded", state.last_reason
            assert [e.canary_weight for e in state.events if e.kind in ("start", "advance")] == [50, 100]
            # both replicas served traffic and both now route everything to v2
            assert all(sum(t.statuses.values()) > 0 and t.statuses[200] > 0 for t in loads)
            assert weights(stack.routers[0]) == weights(stack.routers[1]) == {"v1": 0.0, "v2": 100.0}
            # Prometheus saw the canary arm on both replicas
            series = prom.query('sum by (replica) (servestack_router_upstream_requests_total{route="face",arm="v2"})')
            assert {s["metric"]["replica"] for s in series} == {"0", "1"}
