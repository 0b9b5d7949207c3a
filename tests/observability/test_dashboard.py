"""The Grafana dashboard: valid JSON, sane layout, every query parses, every topic of issue 6 shown."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.monitoring_assets import dashboard, dashboard_exprs, dashboard_panels, grafana_to_promql


def test_layout_and_ids() -> None:
    d = dashboard()
    assert d["uid"] == "servestack-overview" and d["schemaVersion"] >= 36
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    # No two panels overlap on the grid.
    cells = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))


@pytest.mark.parametrize(
    ("topic", "needle"),
    [
        ("per-arm throughput", "sum by (route, arm) (rate(servestack_router_upstream_requests_total"),
        ("per-arm errors", 'outcome=~"error|timeout"'),
        ("per-arm latency", "sum by (route, arm, le) (rate(servestack_router_upstream_duration_seconds_bucket"),
        ("batch size", "servestack_hasher_batch_size_bucket"),
        ("queue depth", "servestack_hasher_queue_depth"),
        ("vLLM waiting requests", "vllm:num_requests_waiting"),
        ("KV cache usage", "vllm:kv_cache_usage_perc"),
        ("replicas", 'count by (job) (up{job=~"servestack-.*"} == 1)'),
    ],
)
def test_issue_topics_are_on_the_dashboard(topic: str, needle: str) -> None:
    assert any(needle in e for e in dashboard_exprs()), topic


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: apt-get install -y prometheus")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana variables substituted)."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:q{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout
