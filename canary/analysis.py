"""``CanaryAnalysis``: Flagger's ``analysis`` block, field for field, and the pure decision.

A policy reads like the CRD users know (camelCase is accepted too)::

    interval_s: 30          # Flagger: interval: 30s
    threshold: 2            # failed checks before rollback
    max_weight: 50          # Flagger: maxWeight
    step_weight: 10         # Flagger: stepWeight  (or step_weights: [5, 10, 25, 50])
    min_requests: 20        # ServeStack: canary requests per interval before judging
    metrics:
      - {name: error-rate, threshold_range: {max: 1}}           # percent
      - {name: request-duration, threshold_range: {max: 150}}   # p99, ms
      - {name: decision-agreement, threshold_range: {min: 98}}  # percent, shadowed requests
      - {name: bit-agreement, threshold_range: {min: 95}}       # percent of code bits
    error_gates:             # ServeStack: error rates from labelled outcomes (canary.error_gates)
      - {metric: frr, max: 1, confidence: 95, mode: non-inferiority}  # FRR <= stable + 1 point
      - {metric: far, max: 0, mode: no-harm}                         # FAR not above stable's

The semantics are Flagger's scheduler (``pkg/controller/scheduler.go``): every interval the
checks run against the canary's metrics; a failed check increments ``failed_checks`` and the
weight holds; at ``failed_checks >= threshold`` the canary is rolled back; otherwise the weight
steps toward ``max_weight``; once it has reached ``max_weight`` and the checks pass, it is promoted
(all traffic to the canary arm). One deliberate difference: Flagger judges the threshold at the
start of the next interval, we roll back in the interval that reaches it, so a bad canary takes
exactly ``threshold`` intervals of traffic.

``evaluate`` does no I/O and reads no clock: the controller stamps times and applies weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from canary.error_gates import ErrorGate, ErrorMetric, RateDifference
from canary.state import CanaryState

MetricName = Literal["request-success-rate", "error-rate", "request-duration", "decision-agreement", "bit-agreement"]
Action = Literal["advance", "hold", "promote", "rollback"]

# How each metric reads in a reason: label, unit, and what it counts (for "not enough data").
_DISPLAY: dict[str, tuple[str, str]] = {
    "request-success-rate": ("success rate", "%"),
    "error-rate": ("error rate", "%"),
    "request-duration": ("p99", "ms"),
    "decision-agreement": ("decision agreement", "%"),
    "bit-agreement": ("bit agreement", "%"),
}


class _FlaggerShaped(BaseModel):
    """snake_case fields that also accept Flagger's camelCase spelling."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class ThresholdRange(_FlaggerShaped):
    """Flagger's ``thresholdRange``: the check passes when ``min <= value <= max``."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("threshold_range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"threshold_range min {self.min} > max {self.max}")
        return self


class MetricCheck(_FlaggerShaped):
    """One of Flagger's ``metrics`` entries (built-in names only; no templateRef, and the query
    window is always the analysis interval)."""

    name: MetricName
    threshold_range: ThresholdRange


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: MetricName | ErrorMetric
    value: float | None = Field(description="None: no data this interval")
    passed: bool | None = Field(description="None: no data, not judged")
    text: str = Field(description='readable, e.g. "p99 212 ms > 150 ms"')


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the canary arm did during one interval (deltas, not totals).

    ``requests`` counts every try made for the canary arm (a fallback's try included), ``errors``
    the failed ones, ``fallbacks`` the requests its backend handed to another backend.
    Counts are floats because PromQL ``increase()`` extrapolates. ``p99_ms`` is None without
    latency samples; the agreement counts are zero when nothing was shadowed/compared.
    """

    window_s: float
    requests: float
    errors: float
    p99_ms: float | None = None
    fallbacks: float = 0.0
    decisions_compared: float = 0.0
    decisions_agreed: float = 0.0
    bits_compared: float = 0.0
    bits_agreed: float = 0.0
    error_differences: Mapping[str, RateDifference] = field(default_factory=dict)  # "frr"/"far": canary - stable

    def value(self, name: MetricName) -> float | None:
        """The metric in the unit its threshold uses (percent or ms); None when unmeasured."""
        if name == "request-duration":
            return self.p99_ms
        if name in ("error-rate", "request-success-rate"):
            if self.requests <= 0:
                return None
            # A request the canary's backend left to a fallback failed on the canary, even though
            # the user got an answer (and even when no try was made: an ejected replica).
            error_pct = min(100.0, 100.0 * (self.errors + self.fallbacks) / self.requests)
            return error_pct if name == "error-rate" else 100.0 - error_pct
        if name == "decision-agreement":
            return 100.0 * self.decisions_agreed / self.decisions_compared if self.decisions_compared > 0 else None
        if name == "bit-agreement":
            return 100.0 * self.bits_agreed / self.bits_compared if self.bits_compared > 0 else None
        raise ValueError(f"unknown metric {name!r}")


class Decision(BaseModel):
    """What to do after an interval, why, and the state to persist."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reason: str
    state: CanaryState
    weights: dict[str, float] | None = Field(description="arm weights to apply; None: leave them")
    checks: list[CheckResult] = Field(default_factory=list)


def _fmt(value: float) -> str:
    """Numbers as people write them: 212, 0.5, 99.2 (no 212.000000)."""
    if math.isfinite(value) and abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def check_metric(metric: MetricCheck, snapshot: MetricsSnapshot) -> CheckResult:
    """Judge one metric against its range; the text names the bound that was crossed."""
    label, unit = _DISPLAY[metric.name]
    value = snapshot.value(metric.name)
    if value is None:
        return CheckResult(name=metric.name, value=None, passed=None, text=f"{label}: no data")
    shown = f"{label} {_fmt(value)} {unit}"
    low, high = metric.threshold_range.min, metric.threshold_range.max
    if low is not None and value < low:
        return CheckResult(name=metric.name, value=value, passed=False, text=f"{shown} < {_fmt(low)} {unit}")
    if high is not None and value > high:
        return CheckResult(name=metric.name, value=value, passed=False, text=f"{shown} > {_fmt(high)} {unit}")
    bound = f"<= {_fmt(high)}" if high is not None else f">= {_fmt(low)}"  # type: ignore[arg-type]
    return CheckResult(name=metric.name, value=value, passed=True, text=f"{shown} {bound} {unit}")


def check_gate(gate: ErrorGate, snapshot: MetricsSnapshot) -> CheckResult:
    """Judge one error-rate gate on the snapshot's canary - stable difference."""
    diff = snapshot.error_differences.get(gate.metric)
    passed, text = gate.judge(diff)
    value = None if diff is None else 100 * diff.difference
    if passed is None:
        return CheckResult(name=gate.metric, value=None, passed=None, text=f"{gate.metric.upper()}: {text}")
    return CheckResult(name=gate.metric, value=value, passed=passed, text=text)


class CanaryAnalysis(_FlaggerShaped):
    """Flagger's CanaryAnalysis (weight-shifting part) plus ``min_requests``."""

    interval_s: float = Field(60.0, gt=0, description="Flagger interval: time between checks")
    threshold: int = Field(5, ge=1, description="failed checks before rollback")
    max_weight: float = Field(50.0, gt=0, le=100, description="highest canary weight before promotion (percent)")
    step_weight: float = Field(10.0, gt=0, le=100, description="weight added per passed interval (percent)")
    step_weights: list[float] | None = Field(None, description="explicit weight steps; overrides step_weight")
    min_requests: int = Field(
        20, ge=0, description="ServeStack: canary requests an interval needs before it is judged (else hold)",
    )
    metrics: list[MetricCheck] = Field(default_factory=list)
    error_gates: list[ErrorGate] = Field(default_factory=list, description="FAR/FRR from labelled outcomes")

    @model_validator(mode="after")
    def _steps(self) -> CanaryAnalysis:
        if self.step_weights is not None:
            if not self.step_weights:
                raise ValueError("step_weights must not be empty")
            if any(b <= a for a, b in zip(self.step_weights, self.step_weights[1:], strict=False)):
                raise ValueError(f"step_weights must increase, got {self.step_weights}")
            if not (0 < self.step_weights[0] and self.step_weights[-1] <= 100):
                raise ValueError("step_weights must lie in (0, 100]")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"each metric may appear once, got {names}")
        return self

    @property
    def top_weight(self) -> float:
        """The weight at which a passing interval promotes."""
        return self.step_weights[-1] if self.step_weights else self.max_weight

    def next_weight(self, weight: float) -> float:
        """The next step above ``weight`` (never above the top weight)."""
        if self.step_weights:
            return next((w for w in self.step_weights if w > weight), self.step_weights[-1])
        return min(weight + self.step_weight, self.max_weight)

    def evaluate(self, snapshot: MetricsSnapshot, state: CanaryState) -> Decision:
        """Decide advance / hold / promote / rollback for the interval just measured.

        Args:
            snapshot: the canary arm's metrics over the last interval.
            state: the state before this interval's decision.

        Returns:
            The decision with a readable reason and the next state (``updated_at`` and events are
            the controller's to stamp: this function reads no clock).
        """
        canary = state.canary_arm
        if state.terminal:
            return Decision(action="hold", reason=f"canary already {state.phase}", state=state, weights=None)
        if state.phase == "initializing":
            weight = self.next_weight(0.0)
            nxt = state.model_copy(update={"phase": "progressing", "canary_weight": weight,
                                           "last_reason": f"start: {canary} weight 0 -> {_fmt(weight)} %"})
            return Decision(action="advance", reason=nxt.last_reason, state=nxt, weights=nxt.weights())

        judged = state.model_copy(update={"iterations": state.iterations + 1})
        if snapshot.requests < self.min_requests:
            reason = (f"hold: not enough traffic: {_fmt(snapshot.requests)} {canary} requests "
                      f"< {self.min_requests} in {_fmt(snapshot.window_s)} s")
            return self._hold(judged, reason, [])

        checks = [check_metric(m, snapshot) for m in self.metrics] + [
            check_gate(g, snapshot) for g in self.error_gates]
        failed = [c for c in checks if c.passed is False]
        if failed:
            return self._failed(judged, "halt: " + "; ".join(c.text for c in failed), checks)

        missing = [c for c in checks if c.passed is None]
        if missing:
            reason = "hold: not enough data: " + ", ".join(c.text.split(":")[0] for c in missing)
            return self._hold(judged, reason, checks)

        passed = "; ".join(c.text for c in checks) or "no metrics configured"
        if state.canary_weight >= self.top_weight:
            reason = f"promote: checks passed at {canary} weight {_fmt(state.canary_weight)} % ({passed})"
            nxt = judged.model_copy(update={"phase": "succeeded", "canary_weight": 100.0, "last_reason": reason})
            return Decision(action="promote", reason=reason, state=nxt, weights=nxt.weights(), checks=checks)
        weight = self.next_weight(state.canary_weight)
        reason = f"advance: {canary} weight {_fmt(state.canary_weight)} -> {_fmt(weight)} % ({passed})"
        nxt = judged.model_copy(update={"canary_weight": weight, "last_reason": reason})
        return Decision(action="advance", reason=reason, state=nxt, weights=nxt.weights(), checks=checks)

    def unmeasured(self, state: CanaryState, error: str) -> Decision:
        """The metrics could not be read this interval: a failed check, as in Flagger."""
        if state.terminal or state.phase == "initializing":
            return self._hold(state, f"hold: metrics unavailable: {error}", [])
        judged = state.model_copy(update={"iterations": state.iterations + 1})
        return self._failed(judged, f"halt: metrics unavailable: {error}", [])

    def _failed(self, judged: CanaryState, halt: str, checks: list[CheckResult]) -> Decision:
        count = judged.failed_checks + 1
        if count >= self.threshold:
            reason = f"rollback: {count} failed checks >= threshold {self.threshold} ({halt})"
            nxt = judged.model_copy(update={"phase": "failed", "canary_weight": 0.0, "failed_checks": count,
                                            "last_reason": reason})
            return Decision(action="rollback", reason=reason, state=nxt, weights=nxt.weights(), checks=checks)
        reason = f"{halt} (failed checks {count}/{self.threshold})"
        return self._hold(judged.model_copy(update={"failed_checks": count}), reason, checks)

    @staticmethod
    def _hold(state: CanaryState, reason: str, checks: list[CheckResult]) -> Decision:
        return Decision(action="hold", reason=reason, state=state.model_copy(update={"last_reason": reason}),
                        weights=None, checks=checks)


def new_state(route: str, stable_arm: str, canary_arm: str, canary_backend: str | None = None) -> CanaryState:
    """The state of a canary that has not started shifting traffic."""
    if stable_arm == canary_arm:
        raise ValueError(f"stable and canary arm are both {canary_arm!r}")
    return CanaryState(route=route, stable_arm=stable_arm, canary_arm=canary_arm, canary_backend=canary_backend)


def manual(state: CanaryState, action: Literal["promote", "rollback"], reason: str) -> Decision:
    """An operator's promote or abort (``servestack canary promote|abort``): pure as well."""
    if action == "promote":
        nxt = state.model_copy(update={"phase": "succeeded", "canary_weight": 100.0, "last_reason": reason})
    else:
        nxt = state.model_copy(update={"phase": "failed", "canary_weight": 0.0, "last_reason": reason})
    return Decision(action=action, reason=reason, state=nxt, weights=nxt.weights())
