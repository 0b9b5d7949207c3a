"""Read k8s/monitoring/: the dashboard's and the rules' PromQL, and the metric names they use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
LOCAL_CONFIG = MONITORING / "prometheus-local.yml"
INTERFACES = ROOT / "docs" / "INTERFACES.md"

# A metric name where PromQL uses one: not a label value (inside quotes), not a function.
_NAME = re.compile(r"(?<![\w:\"'])(servestack_[a-z0-9_]+|vllm:[a-z0-9_:]+|kube_[a-z0-9_]+|up)(?=\s*[{\[)]|\s*$|\s)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def rule_exprs() -> list[str]:
    return [str(r["expr"]) for r in rules()]


def metric_names(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables so that promtool can parse a panel's query."""
    return expr.replace("$__rate_interval", "1m").replace("$route", ".*")


def interface_metric_names() -> set[str]:
    """Every metric name docs/INTERFACES.md fixes."""
    return set(re.findall(r"(servestack_[a-z0-9_]+|vllm:[a-z0-9_]+)", INTERFACES.read_text()))
