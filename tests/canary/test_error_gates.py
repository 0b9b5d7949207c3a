"""Canary error-rate gates: always-valid bounds on canary - stable FRR/FAR, in the pure analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from canary.analysis import CanaryAnalysis, MetricsSnapshot, new_state
from canary.error_gates import ErrorGate, RateDifference, always_valid_bounds
from canary.sources.experiment_report import differences


def test_bounds_are_wider_than_the_fixed_horizon_interval_and_shrink_with_data() -> None:
    low, high = always_valid_bounds(0.0, 0.01, 0.95)
    assert high > 1.96 * 0.01 and low == pytest.approx(-high)
    assert always_valid_bounds(0.0, 0.001, 0.95)[1] < high


def test_bounds_hold_at_every_read_of_a_null_random_walk() -> None:
    """Read 50 times as the data grows, the 95 % sequence excludes the true 0 in at most ~5 % of runs."""
    rng = np.random.default_rng(4)
    misses = 0
    runs = 400
    for _ in range(runs):
        x = rng.normal(0, 0.3, size=5000)  # per-subject differences
        for n in np.linspace(100, 5000, 50).astype(int):
            d, se = float(x[:n].mean()), float(x[:n].std(ddof=1) / math.sqrt(n))
            low, high = always_valid_bounds(d, se, 0.95)
            if low > 0 or high < 0:
                misses += 1
                break
    assert misses / runs <= 0.05


def test_non_inferiority_and_no_harm() -> None:
    frr = ErrorGate(metric="frr", max=1, confidence=95, mode="non-inferiority", min_subjects=30)
    assert frr.judge(None)[0] is None
    assert frr.judge(RateDifference(0.0, 0.001, 5000))[0] is True  # bound within +1 point
    assert frr.judge(RateDifference(0.0, 0.02, 5000))[0] is None  # too uncertain: hold
    passed, text = frr.judge(RateDifference(0.05, 0.005, 5000))
    assert passed is False and "above +1" in text
    far = ErrorGate(metric="far", max=0, mode="no-harm")
    assert far.judge(RateDifference(0.0, 0.02, 5000))[0] is True
    assert far.judge(RateDifference(0.03, 0.004, 5000))[0] is False


def test_analysis_holds_advances_and_halts_on_gates() -> None:
    analysis = CanaryAnalysis.model_validate({
        "interval_s": 10, "threshold": 2, "min_requests": 0,
        "error_gates": [{"metric": "frr", "max": 1}, {"metric": "far", "max": 0, "mode": "no-harm"}]})
    state = new_state("face", "v1", "v2").model_copy(update={"phase": "progressing", "canary_weight": 10})
    base = MetricsSnapshot(window_s=10, requests=100, errors=0)
    hold = analysis.evaluate(base, state)
    assert hold.action == "hold" and "FRR" in hold.reason
    good = MetricsSnapshot(window_s=10, requests=100, errors=0, error_differences={
        "frr": RateDifference(0.0, 0.001, 4000), "far": RateDifference(0.0, 0.001, 4000)})
    assert analysis.evaluate(good, state).action == "advance"
    bad = MetricsSnapshot(window_s=10, requests=100, errors=0, error_differences={
        "frr": RateDifference(0.0, 0.001, 4000), "far": RateDifference(0.02, 0.002, 4000)})
    decision = analysis.evaluate(bad, state)
    assert decision.action == "hold" and "halt: FAR canary - stable +2.00 points" in decision.reason


def test_differences_read_from_the_report_json() -> None:
    report = {"comparisons": [
        {"metric": "accept_rate", "control": "v1", "treatment": "v2", "difference": 0.1, "standard_error": 0.1,
         "subjects": 9},
        {"metric": "frr", "control": "v1", "treatment": "v2", "difference": 0.01, "standard_error": 0.004,
         "subjects": 300},
        {"metric": "far", "control": "v1", "treatment": "v3", "difference": 0.5, "standard_error": 0.1,
         "subjects": 300},
        {"metric": "far", "control": "v1", "treatment": "v2", "difference": None, "standard_error": None,
         "subjects": 1}]}
    assert differences(report, "v1", "v2") == {"frr": RateDifference(0.01, 0.004, 300)}
    assert differences(report, "v0", "v2") == {}


def test_cli_flags_make_the_gates() -> None:
    import argparse

    from servestack import canary_cmd

    parser = argparse.ArgumentParser(prog="servestack")
    canary_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["canary", "start", "face", "--to", "v2", "--max-frr-increase", "1",
                              "--max-far-increase", "0", "--experiment", "face-v2"])
    gates = canary_cmd.analysis_from_args(args).error_gates
    assert [(g.metric, g.max, g.mode) for g in gates] == [("frr", 1.0, "non-inferiority"), ("far", 0.0, "no-harm")]
    plain = parser.parse_args(["canary", "start", "face", "--to", "v2"])
    assert canary_cmd.analysis_from_args(plain).error_gates == []
