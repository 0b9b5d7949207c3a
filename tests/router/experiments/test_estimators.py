"""Subject-level estimators, SRM over first assignments, the mSPRT p-value and the error-rate curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.experiments.error_rates import det_points, equal_error_rate, error_curve, frr_at_far, histogram
from router.experiments.estimators import (
    cluster_difference,
    cluster_rate,
    request_level_ztest,
    subject_mean_difference,
    wilson_effective,
    z_test,
)
from router.experiments.sequential import always_valid_p, msprt_log_lr
from router.experiments.srm import srm_subjects


def test_cluster_rate_equals_hand_computed_cr1() -> None:
    n = np.array([10, 2, 4])
    y = np.array([5, 0, 1])
    est = cluster_rate(n, y)
    p = 6 / 16
    resid = y - p * n
    assert est.value == pytest.approx(p)
    assert est.se == pytest.approx(math.sqrt(3 / 2 * (resid**2).sum() / 16**2))
    assert est.subjects == 3


def test_one_heavy_subject_widens_the_interval_the_request_level_test_ignores() -> None:
    # Control: 1 subject with 1,000 requests, all errors; 99 subjects with 10 requests, no error.
    n_c = np.r_[1000, np.full(99, 10), np.zeros(100)]
    y_c = np.r_[1000, np.zeros(99), np.zeros(100)]
    n_t = np.r_[np.zeros(100), np.full(100, 10)]
    y_t = np.zeros(200)
    _, p_req = request_level_ztest(n_c, y_c, n_t, y_t)
    _, p_subj = z_test(subject_mean_difference(n_c, y_c, n_t, y_t, null=True))
    assert p_req < 1e-100  # requests: "certain"
    assert p_subj > 0.3  # subjects: one subject of 100 in control errs, none of 100 in treatment


def test_a_subject_in_both_arms_is_one_unit() -> None:
    # Subject 0 moved from control to treatment; its influence enters once, with both parts.
    est = cluster_difference(np.array([4, 2, 0]), np.array([2, 1, 0]), np.array([2, 0, 2]), np.array([1, 0, 0]))
    assert est.value == pytest.approx(0.25 - 0.5)
    assert est.subjects == 3


def test_null_variance_is_positive_when_an_arm_shows_no_event() -> None:
    n_c, y_c = np.ones(50), np.r_[np.ones(5), np.zeros(45)]
    n_t, y_t = np.ones(50), np.zeros(50)
    assert cluster_difference(n_c, y_c, n_t, y_t).se > 0
    assert cluster_difference(n_c, y_c, n_t, y_t, null=True).se > cluster_difference(n_c, y_c, n_t, y_t).se


def test_wilson_effective_shrinks_the_sample_by_the_design_effect() -> None:
    lo1, hi1 = wilson_effective(0.1, 0.01, 10_000, 0.95)  # n_eff = 900
    lo2, hi2 = wilson_effective(0.1, math.sqrt(0.09 / 10_000), 10_000, 0.95)
    assert hi1 - lo1 > 3 * (hi2 - lo2)
    lo, hi = wilson_effective(0.0, 0.0, 100, 0.95)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.02 < hi < 0.05


def test_srm_counts_first_assignments_against_the_weights_then() -> None:
    rng = np.random.default_rng(3)
    w = np.where(np.arange(6000) < 3000, 0.1, 0.5)  # half assigned at 10 %, half at 50 %
    arm = (rng.random(6000) < w).astype(int)
    probs = np.stack([1 - w, w], axis=-1)
    observed, _, p, dof = srm_subjects(arm, probs)
    assert dof == 1 and p > 0.001
    assert observed.tolist() == [float((arm == 0).sum()), float((arm == 1).sum())]
    # Against the current weights only, the same subjects would look badly mismatched.
    _, _, p_now, _ = srm_subjects(arm, np.tile([0.5, 0.5], (6000, 1)))
    assert p_now < 1e-10


def test_srm_three_arms_broken_split_and_stray_arm() -> None:
    probs = np.tile([0.5, 0.3, 0.2], (3000, 1))
    arm = np.r_[np.zeros(1800), np.ones(900), np.full(300, 2)].astype(int)  # 60/30/10
    _, chi2, p, dof = srm_subjects(arm, probs)
    assert dof == 2 and p < 1e-10 and chi2 > 100
    stray = np.tile([0.5, 0.5, 0.0], (10, 1))
    _, _, p, _ = srm_subjects(np.array([0, 1] * 4 + [2, -1]), stray)
    assert p == 0.0


def test_msprt_grows_with_evidence_and_its_p_value_never_rises() -> None:
    assert msprt_log_lr(0.0, 1e-4) < 0 < msprt_log_lr(0.05, 1e-4)
    p = always_valid_p(np.array([0.05, 0.0, 0.0, 0.1]), np.array([1e-4, 1e-4, np.nan, 1e-4]))
    assert all(a >= b for a, b in zip(p, p[1:], strict=False))
    assert p[2] == p[1]  # a read without enough data changes nothing


def test_error_curve_eer_and_frr_at_far() -> None:
    genuine = [10] * 90 + [30] * 10  # FRR at t=24: 10 %
    impostor = [20] * 5 + [60] * 95  # FAR at t=24: 5 %
    curve = error_curve(genuine, impostor)
    assert curve.far[24] == pytest.approx(0.05) and curve.frr[24] == pytest.approx(0.10)
    assert curve.far[9] == 0 and curve.frr[9] == 1
    frr, t = frr_at_far(curve, 0.01)
    assert t == 19 and frr == pytest.approx(0.10)
    eer = equal_error_rate(curve)
    assert 0.05 <= eer <= 0.10
    pts = det_points(curve)
    assert pts[0] == (0.0, 1.0) and pts[-1] == (1.0, 0.0) and len(pts) == 5
    assert sum(histogram(genuine + impostor)) == 200
    assert equal_error_rate(error_curve(genuine, [])) is None
