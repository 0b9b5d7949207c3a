"""A real Prometheus scrapes the real processes of the stack; queries return their series.

Prometheus runs on 127.0.0.1 with a temp TSDB and a generated config scraping every service's
/metrics each second (tests/observability/prom_server.py), with the alert rules loaded.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from servestack.samples import write_samples
from servestack.stackfile import StackInfo
from tests.observability.monitoring_assets import RULES, rules
from tests.observability.prom_server import PrometheusServer, job_for, prometheus_binary, targets_from_services

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus missing: apt-get install -y prometheus"),
]


def _traffic(stack: StackInfo, tmp_path: Path) -> None:
    """One enrol + verify so that the per-arm router series and the hasher histograms exist."""
    samples = write_samples(tmp_path)
    body = {"subject_id": "prom-scrape-subject", "face": base64.b64encode(samples["face"].read_bytes()).decode()}
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.services["router"], timeout=120) as http:
        for path in ("/v1/enroll", "/v1/verify"):
            r = http.post(path, json=body, headers=auth)
            assert r.status_code == 200, r.text


def test_prometheus_scrapes_router_hasher_and_explainer(stack: StackInfo, tmp_path: Path) -> None:
    with PrometheusServer(targets_from_services(stack.services), scrape_interval_s=1, rule_files=[RULES]) as prom:
        targets = prom.wait_for_targets_up(timeout_s=60)
        assert {t["labels"]["service"] for t in targets} == set(stack.services)
        assert len(prom.rules()) == len(rules())
        _traffic(stack, tmp_path)

        up = prom.wait_for('up{job=~"servestack-.*"} == 1', lambda r: len(r) == len(stack.services))
        assert {s["metric"]["service"] for s in up} == set(stack.services)

        # Router: per-arm upstream calls of the verify above, on the face route.
        arms = prom.wait_for(
            'sum by (route, arm, backend) (servestack_router_upstream_requests_total{route="face",outcome="ok"})',
            lambda r: len(r) >= 1,
        )
        assert all(s["metric"]["backend"].startswith("hasher-face-") and float(s["value"][1]) >= 1 for s in arms)
        prom.wait_for('servestack_router_http_requests_total{path="/v1/verify",status="200"}', lambda r: len(r) == 1)
        prom.wait_for('servestack_router_policy_weight{route="face"}', lambda r: len(r) >= 1)

        # Hashers: every pod says which model/version it serves; the batcher exports its gauges.
        hashers = {n for n in stack.services if job_for(n) == "servestack-hasher"}
        info = prom.wait_for("servestack_hasher_engine_info", lambda r: len(r) == len(hashers))
        for s in info:
            name = s["metric"]["service"]
            assert name in hashers and name.startswith(f"hasher-{s['metric']['model']}-v{s['metric']['version']}"), s
        prom.wait_for("servestack_hasher_queue_depth", lambda r: len(r) == len(hashers))
        # Span export health, a counter per process: nothing dropped on a quiet stack.
        for job, count in (("router", 1), ("hasher", len(hashers))):
            dropped = prom.wait_for(f"servestack_{job}_spans_dropped_total", lambda r, n=count: len(r) == n)
            assert all(float(s["value"][1]) == 0 for s in dropped), dropped
        prom.wait_for("sum(servestack_hasher_batch_size_count) > 0", lambda r: len(r) == 1)

        # Explainer: its own metrics and vLLM's re-exported ones.
        explainer = {n for n in stack.services if job_for(n) == "servestack-explainer"}
        if explainer:
            waiting = prom.wait_for('vllm:num_requests_waiting{job="servestack-explainer"}', lambda r: len(r) >= 1)
            assert {s["metric"]["service"] for s in waiting} == explainer
            prom.wait_for('vllm:kv_cache_usage_perc{job="servestack-explainer"}', lambda r: len(r) >= 1)
            prom.wait_for("servestack_explainer_spans_dropped_total", lambda r: len(r) == len(explainer))
            names = prom.metric_names()
            assert any(n.startswith("servestack_explainer_") for n in names), sorted(names)[:50]
