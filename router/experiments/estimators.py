"""Subject-level estimators: a rate per arm and a difference of rates, with cluster-robust variance.

Assignment is sticky by subject and traffic is Zipf-like, so one heavy subject's requests are
correlated; the subject, not the request, is the independent unit. Each arm's rate is the ratio
``sum(y_i) / sum(n_i)`` over subjects ``i`` (``n_i`` requests, ``y_i`` events), and its variance is
the delta-method (cluster-robust, CR1) one: ``m/(m-1) * sum((y_i - p n_i)^2) / N^2``. The variance
of a difference uses each subject's influence on both arms at once, so a subject seen in two arms
(weight moved) is still one unit: ``phi_i = (y_ti - p_t n_ti)/N_t - (y_ci - p_c n_ci)/N_c``.

Every function takes arrays whose last axis is the subject and any leading (batch) axes, so the
same code serves one report and a thousand simulated experiments at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """Arrays (or scalars) of a point estimate, its standard error and the subjects behind it."""

    value: np.ndarray
    se: np.ndarray
    subjects: np.ndarray


def _cr1(m: np.ndarray) -> np.ndarray:
    return np.where(m > 1, m / np.maximum(m - 1, 1), np.nan)


def cluster_rate(n: np.ndarray, y: np.ndarray) -> Estimate:
    """Rate ``Y/N`` over subjects (last axis) with its cluster-robust standard error (NaN without data)."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    total = n.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = y.sum(-1) / total
        resid = y - p[..., None] * n
        m = (n > 0).sum(-1)
        var = _cr1(m) * (resid**2).sum(-1) / total**2
    return Estimate(p, np.sqrt(var), m)


def cluster_difference(n_c: np.ndarray, y_c: np.ndarray, n_t: np.ndarray, y_t: np.ndarray,
                       null: bool = False) -> Estimate:
    """Treatment rate minus control rate, subjects aligned on the last axis of all four arrays.

    With ``null`` the variance is the one under the null hypothesis (both arms centred on the
    pooled rate, as a score test does): an arm whose few subjects happen to show no event at all
    then still carries variance, where the unrestricted estimate would read zero and make any
    difference look certain. Use it for tests; the unrestricted one for intervals.
    """
    n_c, y_c, n_t, y_t = (np.asarray(a, float) for a in (n_c, y_c, n_t, y_t))
    big_c, big_t = n_c.sum(-1), n_t.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_c, p_t = y_c.sum(-1) / big_c, y_t.sum(-1) / big_t
        c_c, c_t = (p_c, p_t) if not null else ((y_c.sum(-1) + y_t.sum(-1)) / (big_c + big_t),) * 2
        phi = (y_t - c_t[..., None] * n_t) / big_t[..., None] - (y_c - c_c[..., None] * n_c) / big_c[..., None]
        m = ((n_c + n_t) > 0).sum(-1)
        var = _cr1(m) * (phi**2).sum(-1)
    return Estimate(p_t - p_c, np.sqrt(var), m)


def subject_means(n: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject (indicator, rate) arrays: each subject with data counts once, with its own rate."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    seen = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(seen, y / np.where(seen, n, 1.0), 0.0)
    return seen.astype(float), rate


def subject_mean_difference(n_c: np.ndarray, y_c: np.ndarray, n_t: np.ndarray, y_t: np.ndarray,
                            null: bool = False) -> Estimate:
    """Difference of the arms' mean per-subject rates (each subject weighs 1), with its robust variance.

    The ratio of sums lets a handful of heavy subjects dominate an arm, and its cluster-robust
    variance is then estimated from few effective clusters (too small); the mean of per-subject
    rates keeps every subject's weight equal, so the variance rests on all of them.
    """
    return cluster_difference(*subject_means(n_c, y_c), *subject_means(n_t, y_t), null=null)


def z_test(est: Estimate) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-horizon two-sided z-test of ``value == 0``: (z, p). A zero standard error reads z 0, p 1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(est.se > 0, est.value / np.where(est.se > 0, est.se, 1.0), 0.0)
    z = np.where(np.isnan(est.value), np.nan, z)
    return z, 2 * stats.norm.sf(np.abs(z))


def request_level_ztest(n_c: np.ndarray, y_c: np.ndarray, n_t: np.ndarray, y_t: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The pooled two-proportion z-test over requests (treats requests as independent): (z, p).

    Kept as a secondary figure and for contrast: with sticky subjects and heavy-tailed traffic its
    p-values are too small.
    """
    x1, n1, x2, n2 = (np.asarray(a, float).sum(-1) for a in (y_c, n_c, y_t, n_t))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = np.where(se > 0, (x2 / n2 - x1 / n1) / np.where(se > 0, se, 1.0), 0.0)
    return z, 2 * stats.norm.sf(np.abs(z))


def wilson_effective(p: float, se: float, n: int, confidence: float) -> tuple[float, float]:
    """A Wilson interval for a clustered proportion: Wilson's formula at the effective sample size.

    ``n_eff = p(1-p)/se^2`` (``n`` divided by the design effect), capped at ``n``; at p = 0 or 1
    the cluster variance is 0 and ``n`` itself is used, so the interval still has width.
    """
    if n <= 0 or np.isnan(p):
        return (float("nan"), float("nan"))
    n_eff = float(n) if se <= 0 or p in (0.0, 1.0) else min(float(n), p * (1 - p) / se**2)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    denom = 1 + z * z / n_eff
    center = (p + z * z / (2 * n_eff)) / denom
    half = z * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return (max(0.0, float(center - half)), min(1.0, float(center + half)))
