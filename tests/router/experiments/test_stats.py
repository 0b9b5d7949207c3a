"""The A/B statistics against independent references (scipy, published values) and SRM detection."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from router.experiments.report import build_report
from router.experiments.rows import ExperimentRow
from router.experiments.stats import srm_check, two_proportion_ztest, wilson_interval


def Row(arm: str, decision: str, latency_ms: float, created_at: float) -> ExperimentRow:  # noqa: N802
    return ExperimentRow(arm, decision, latency_ms, created_at, subject_id=f"s{created_at}")


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    ci = wilson_interval(81, 263)
    assert (ci.low, ci.high) == (pytest.approx(0.2553, abs=5e-5), pytest.approx(0.3662, abs=5e-5))
    # 0/10: lower bound exactly 0, upper 0.2775 (Newcombe table I, "0/10").
    ci0 = wilson_interval(0, 10)
    assert ci0.low == 0.0 and ci0.high == pytest.approx(0.2775, abs=5e-5)
    assert wilson_interval(0, 0) is None


def test_wilson_interval_agrees_with_scipy_binomtest() -> None:
    for k, n in [(5, 20), (97, 100), (412, 1000)]:
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
        ci = wilson_interval(k, n, confidence=0.9)
        assert (ci.low, ci.high) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))


def test_two_proportion_ztest_equals_the_2x2_chi_square() -> None:
    x1, n1, x2, n2 = 820, 1000, 870, 1000
    t = two_proportion_ztest(x1, n1, x2, n2)
    chi2, p, _dof, _exp = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert t.z**2 == pytest.approx(chi2, rel=1e-12)
    assert t.p_value == pytest.approx(p, rel=1e-9)
    assert t.z > 0  # the second arm accepts more often
    assert two_proportion_ztest(10, 10, 5, 5).p_value == 1.0  # identical all-accept arms
    assert two_proportion_ztest(1, 0, 1, 1).p_value is None


def test_srm_flags_a_skewed_split_and_passes_a_fair_one() -> None:
    skewed = srm_check({"v1": 8_700, "v2": 1_300}, {"v1": 90, "v2": 10})
    ref = stats.chisquare([8_700, 1_300], [9_000, 1_000])
    assert skewed.chi2 == pytest.approx(ref.statistic) and skewed.p_value == pytest.approx(ref.pvalue)
    assert skewed.mismatch and "sample ratio mismatch" in skewed.summary
    fair = srm_check({"v1": 9_020, "v2": 980}, {"v1": 90, "v2": 10})
    assert not fair.mismatch and fair.p_value > 0.4
    stray = srm_check({"v1": 100, "v2": 3}, {"v1": 100, "v2": 0})
    assert stray.mismatch and "weight 0" in stray.summary
    assert srm_check({}, {"v1": 50, "v2": 50}).summary == "no traffic yet"


def test_report_end_to_end_with_a_skewed_split() -> None:
    rng = random.Random(3)
    rows = []
    for i in range(4000):
        arm = "v2" if rng.random() < 0.2 else "v1"  # configured 90/10: assignment is broken
        accept = rng.random() < (0.80 if arm == "v1" else 0.85)
        rows.append(Row(arm, "accept" if accept else "reject", 10.0 + (i % 100), 1000.0 + i))
    rep = build_report("face-v2", "face", reversed(rows), {"v1": 90, "v2": 10}, generated_at=5000.0)
    v1, v2 = rep.arms
    assert (v1.arm, v2.arm) == ("v1", "v2") and v1.requests + v2.requests == 4000 == rep.total
    assert v1.configured_weight == 90 and v2.observed_share == pytest.approx(100 * v2.requests / 4000)
    assert v1.accept_rate == pytest.approx(v1.accepts / v1.requests)
    assert v1.latency_ms["p50"] == pytest.approx(np.quantile([r.latency_ms for r in rows if r.arm == "v1"], 0.5))
    assert rep.srm.mismatch
    cmp = rep.comparisons[0]
    assert (cmp.control, cmp.treatment) == ("v1", "v2")
    assert cmp.difference == pytest.approx(v2.accept_rate - v1.accept_rate)
    assert cmp.difference_ci.low < cmp.difference < cmp.difference_ci.high
    assert sum(sum(b.counts.values()) for b in rep.timeline) == 4000
    assert rep.timeline[0].start == 1000.0  # rows were given newest first and sorted


def test_report_without_rows() -> None:
    rep = build_report("face-v2", "face", [], {"v1": 90, "v2": 10}, generated_at=1.0)
    assert rep.total == 0 and rep.arms[1].accept_rate is None and rep.arms[1].latency_ms == {}
    assert rep.comparisons[0].p_value is None and not rep.srm.mismatch and rep.timeline == []
