"""Every metric the dashboard and the alert rules read is one the stack defines.

Two checks: against docs/INTERFACES.md (the contract; strict), and against the code of the
component that exports it. The second check is skipped for a component whose package does not
define any ``servestack_<component>_`` metric yet (it lands in parallel); the skip reason says so.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.observability.monitoring_assets import (
    HISTOGRAM_SUFFIXES,
    ROOT,
    dashboard_exprs,
    interface_metric_names,
    metric_names,
    rule_exprs,
)

# Not ours: Prometheus' own `up`, and kube-state-metrics for the HPA panel (Kubernetes only).
EXTERNAL = {
    "up",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_status_current_replicas",
}
PACKAGES = {"router": "router", "hasher": "trt_serving", "explainer": "llm_serving"}


def _used() -> set[str]:
    names: set[str] = set()
    for expr in dashboard_exprs() + rule_exprs():
        names |= metric_names(expr)
    return names


def _base(name: str, known: set[str]) -> str:
    """servestack_x_seconds_bucket -> servestack_x_seconds when the base is a known histogram."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def test_the_extractor_sees_names() -> None:
    assert metric_names('sum by (le) (rate(servestack_hasher_batch_size_bucket{x="servestack_no"}[1m]))') == {
        "servestack_hasher_batch_size_bucket"
    }
    assert metric_names("max(vllm:kv_cache_usage_perc) > 0.9 and up == 0") == {"vllm:kv_cache_usage_perc", "up"}


def test_every_name_is_in_interfaces_md() -> None:
    known = interface_metric_names()
    used = {_base(n, known) for n in _used()} - EXTERNAL
    assert used - known == set(), "names not in docs/INTERFACES.md"
    # And the other way: what the contract promises for dashboards is shown somewhere.
    unused = known - used - {"servestack_router_shadow_comparisons_total"}  # shown; listed to be explicit
    assert unused == set(), f"INTERFACES.md metrics neither on the dashboard nor in a rule: {sorted(unused)}"


def _source(package: str) -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / package).rglob("*.py")))


def _defined(name: str, component: str, source: str) -> bool:
    """The full name in the source, or its remainder after the prefix as a string literal
    (``p = "servestack_router_"; Counter(p + "http_requests_total")``); Counters may omit _total."""
    if name in source:
        return True
    rest = name.removeprefix(f"servestack_{component}_")
    candidates = {rest, rest.removesuffix("_total")}
    return any(re.search(rf"[\"']{re.escape(c)}[\"']", source) for c in candidates)


@pytest.mark.parametrize("component", sorted(PACKAGES))
def test_names_are_defined_by_the_component_code(component: str) -> None:
    known = interface_metric_names()
    names = {_base(n, known) for n in _used() if n.startswith(f"servestack_{component}_")}
    source = _source(PACKAGES[component])
    if f"servestack_{component}_" not in source:
        pytest.skip(f"{PACKAGES[component]}/ defines no servestack_{component}_ metric yet (component not landed)")
    missing = sorted(n for n in names if not _defined(n, component, source))
    assert missing == [], f"used by the dashboard/rules but not defined in {PACKAGES[component]}/"


def test_vllm_names_exist_in_vllm() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm is not installed here: its names are checked against INTERFACES.md only")
    metrics_dir = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics"
    source = "\n".join(p.read_text() for p in metrics_dir.rglob("*.py"))
    used = sorted(n for n in _used() if n.startswith("vllm:"))
    assert used and all(f'"{n}"' in source for n in used), used
