"""The canary controller's own Prometheus metrics (its own registry, built per controller).

``servestack_canary_weight{route,arm}``, ``servestack_canary_failed_checks{route}``,
``servestack_canary_events_total{route,kind}``, ``servestack_canary_check_value{route,metric}``
(the last measured value per metric, in the threshold's unit) and
``servestack_canary_phase{route,phase}`` (1 for the current phase).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from canary.analysis import CheckResult
from canary.state import CanaryState

PHASES = ("initializing", "progressing", "succeeded", "failed")


class CanaryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.weight = Gauge("servestack_canary_weight", "arm weight set by the canary (percent)",
                            ["route", "arm"], registry=r)
        self.failed_checks = Gauge("servestack_canary_failed_checks", "failed checks so far", ["route"], registry=r)
        self.events = Counter("servestack_canary_events_total", "canary steps by kind", ["route", "kind"], registry=r)
        self.check_value = Gauge("servestack_canary_check_value", "last measured value of each check",
                                 ["route", "metric"], registry=r)
        self.phase = Gauge("servestack_canary_phase", "1 for the canary's current phase", ["route", "phase"],
                           registry=r)

    def observe(self, state: CanaryState, kind: str, checks: list[CheckResult] | None = None) -> None:
        for arm, weight in state.weights().items():
            self.weight.labels(state.route, arm).set(weight)
        self.failed_checks.labels(state.route).set(state.failed_checks)
        self.events.labels(state.route, kind).inc()
        for phase in PHASES:
            self.phase.labels(state.route, phase).set(1.0 if state.phase == phase else 0.0)
        for check in checks or []:
            if check.value is not None:
                self.check_value.labels(state.route, check.name).set(check.value)
