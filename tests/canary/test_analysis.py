"""CanaryAnalysis.evaluate: Flagger's semantics as a pure function of (snapshot, state)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from canary.analysis import CanaryAnalysis, MetricsSnapshot, check_metric, manual, new_state

POLICY = {
    "interval_s": 10, "threshold": 2, "max_weight": 50, "step_weight": 20, "min_requests": 20,
    "metrics": [
        {"name": "error-rate", "threshold_range": {"max": 1}},
        {"name": "request-duration", "threshold_range": {"max": 150}},
    ],
}


def healthy(requests: float = 100, p99_ms: float = 40.0) -> MetricsSnapshot:
    return MetricsSnapshot(window_s=10, requests=requests, errors=0, p99_ms=p99_ms)


def started(analysis: CanaryAnalysis):
    state = new_state("face", "v1", "v2")
    return analysis.evaluate(healthy(0), state).state


def test_flagger_camel_case_reads_like_the_crd() -> None:
    crd = {
        "intervalS": 30, "threshold": 3, "maxWeight": 40, "stepWeight": 10,
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
    }
    a = CanaryAnalysis.model_validate(crd)
    assert (a.interval_s, a.threshold, a.max_weight, a.step_weight) == (30, 3, 40, 10)
    assert a.metrics[0].threshold_range.min == 99


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValidationError, match="min, max or both"):
        CanaryAnalysis.model_validate({"metrics": [{"name": "error-rate", "threshold_range": {}}]})
    with pytest.raises(ValidationError, match="must increase"):
        CanaryAnalysis(step_weights=[10, 5])
    with pytest.raises(ValidationError):
        CanaryAnalysis.model_validate({"metrics": [{"name": "cpu", "threshold_range": {"max": 1}}]})


def test_start_moves_to_the_first_step_without_judging() -> None:
    a = CanaryAnalysis.model_validate(POLICY)
    d = a.evaluate(healthy(0), new_state("face", "v1", "v2"))
    assert d.action == "advance"
    assert d.weights == {"v1": 80.0, "v2": 20.0}
    assert d.state.phase == "progressing" and d.state.iterations == 0
    assert d.reason == "start: v2 weight 0 -> 20 %"


def test_healthy_canary_steps_to_max_weight_then_promotes() -> None:
    a = CanaryAnalysis.model_validate(POLICY)
    state = started(a)
    actions, weights = [], [state.canary_weight]
    while not state.terminal:
        d = a.evaluate(healthy(), state)
        actions.append(d.action)
        state = d.state
        weights.append(state.canary_weight)
    assert actions == ["advance", "advance", "promote"]
    assert weights == [20, 40, 50, 100]  # the last step is capped at max_weight
    assert state.phase == "succeeded" and state.weights() == {"v1": 0.0, "v2": 100.0}
    assert d.reason.startswith("promote: checks passed at v2 weight 50 %")
    assert "p99 40 ms <= 150 ms" in d.reason


def test_failed_check_holds_with_a_readable_reason_then_rolls_back_at_threshold() -> None:
    a = CanaryAnalysis.model_validate(POLICY)
    state = started(a)
    slow = healthy(p99_ms=212.0)
    d1 = a.evaluate(slow, state)
    assert d1.action == "hold" and d1.weights is None
    assert d1.reason == "halt: p99 212 ms > 150 ms (failed checks 1/2)"
    assert d1.state.failed_checks == 1 and d1.state.canary_weight == 20
    d2 = a.evaluate(slow, d1.state)
    assert d2.action == "rollback"
    assert d2.weights == {"v1": 100.0, "v2": 0.0}
    assert d2.state.phase == "failed" and d2.state.failed_checks == 2
    assert d2.reason == "rollback: 2 failed checks >= threshold 2 (halt: p99 212 ms > 150 ms)"


def test_failed_checks_accumulate_across_passing_intervals_as_in_flagger() -> None:
    a = CanaryAnalysis.model_validate({**POLICY, "max_weight": 100})
    state = started(a)
    bad = MetricsSnapshot(window_s=10, requests=100, errors=5, p99_ms=30)
    state = a.evaluate(bad, state).state
    state = a.evaluate(healthy(), state).state
    assert state.failed_checks == 1 and state.canary_weight == 40
    d = a.evaluate(bad, state)
    assert d.action == "rollback" and "error rate 5 % > 1 %" in d.reason


def test_not_enough_traffic_holds_without_counting_a_failure() -> None:
    a = CanaryAnalysis.model_validate(POLICY)
    state = started(a)
    d = a.evaluate(MetricsSnapshot(window_s=10, requests=3, errors=3, p99_ms=900), state)
    assert d.action == "hold" and d.state.failed_checks == 0
    assert d.reason == "hold: not enough traffic: 3 v2 requests < 20 in 10 s"


def test_metric_without_data_holds() -> None:
    a = CanaryAnalysis.model_validate(
        {**POLICY, "metrics": [*POLICY["metrics"], {"name": "decision-agreement", "threshold_range": {"min": 98}}]})
    d = a.evaluate(healthy(), started(a))
    assert d.action == "hold" and d.state.failed_checks == 0
    assert d.reason == "hold: not enough data: decision agreement"


def test_unreadable_metrics_count_as_a_failed_check() -> None:
    a = CanaryAnalysis.model_validate({**POLICY, "threshold": 1})
    out = a.unmeasured(started(a), "ConnectError: refused")
    assert out.action == "rollback" and "metrics unavailable: ConnectError: refused" in out.reason


def test_step_weights_and_terminal_states() -> None:
    a = CanaryAnalysis.model_validate({**POLICY, "step_weights": [5, 25, 100]})
    state = started(a)
    assert state.canary_weight == 5
    state = a.evaluate(healthy(), state).state
    state = a.evaluate(healthy(), state).state
    assert state.canary_weight == 100
    d = a.evaluate(healthy(), state)
    assert d.action == "promote"
    again = a.evaluate(healthy(), d.state)
    assert again.action == "hold" and again.reason == "canary already succeeded" and again.state == d.state


def test_precision_canary_is_judged_by_bit_agreement() -> None:
    """fp32 -> int8: same weights, so codes are compared bit by bit on shadowed requests.

    Measured: int8 agreeing with fp32 on 96.9-99.0 % of bits with conditioned weights;
    a broken quantisation (naive random init: 62 %) must be stopped.
    """
    a = CanaryAnalysis.model_validate({
        "interval_s": 10, "threshold": 1, "max_weight": 100, "step_weight": 50, "min_requests": 10,
        "metrics": [{"name": "bit-agreement", "threshold_range": {"min": 95}},
                    {"name": "decision-agreement", "threshold_range": {"min": 97}}],
    })
    state = started(a)
    good = MetricsSnapshot(window_s=10, requests=40, errors=0, p99_ms=20, bits_compared=128 * 40,
                           bits_agreed=round(128 * 40 * 0.975), decisions_compared=40, decisions_agreed=40)
    d = a.evaluate(good, state)
    assert d.action == "advance" and "bit agreement 97.5 % >= 95 %" in d.reason
    broken = MetricsSnapshot(window_s=10, requests=40, errors=0, p99_ms=20, bits_compared=128 * 40,
                             bits_agreed=round(128 * 40 * 0.62), decisions_compared=40, decisions_agreed=39)
    d2 = a.evaluate(broken, d.state)
    assert d2.action == "rollback"
    assert "bit agreement 62.0 % < 95 %" in d2.reason
    assert d2.state.weights() == {"v1": 100.0, "v2": 0.0}


def test_check_text_formats() -> None:
    a = CanaryAnalysis.model_validate({"metrics": [{"name": "request-success-rate", "threshold_range": {"min": 99}}]})
    r = check_metric(a.metrics[0], MetricsSnapshot(window_s=10, requests=200, errors=3))
    assert r.passed is False and r.text == "success rate 98.5 % < 99 %"
    assert r.value == pytest.approx(98.5)


def test_operator_promote_and_abort() -> None:
    state = new_state("face", "v1", "v2").model_copy(update={"phase": "progressing", "canary_weight": 20})
    assert manual(state, "promote", "by hand").weights == {"v1": 0.0, "v2": 100.0}
    d = manual(state, "rollback", "aborted")
    assert d.state.phase == "failed" and d.weights == {"v1": 100.0, "v2": 0.0}
    with pytest.raises(ValueError, match="both"):
        new_state("face", "v1", "v1")
