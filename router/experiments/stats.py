"""A/B statistics, pure: the report's building blocks (Wilson intervals, the request-level
two-proportion z-test, the request-count SRM check, latency quantiles) and its shared models.
The report itself, over subjects, is :mod:`router.experiments.report`.

Why these choices:

- Wilson score intervals, not Wald: they stay inside [0, 1] and keep their coverage at small
  counts and rates near 0 or 1, which is where a fresh canary arm lives.
- The two-proportion z-test uses the pooled proportion (the null hypothesis says the rates are
  equal); its z² equals the 2x2 chi-square statistic without continuity correction.
- SRM is Pearson's chi-square goodness of fit of the observed per-arm counts against the
  configured weights; a p-value below 0.001 (the usual SRM alarm level, stricter than the
  test's alpha because SRM is checked on every report) means the split is broken — assignment,
  fallbacks or logging — and the comparison should not be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

SRM_ALPHA = 0.001
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Interval(_Frozen):
    low: float
    high: float


class ArmStats(_Frozen):
    arm: str
    configured_weight: float = Field(description="percent of the route, from the policy (0 if unknown)")
    requests: int = Field(description="randomised verifications (pinned, fallback, ... are counted apart)")
    accepts: int
    subjects: int = Field(0, description="distinct subjects behind the requests")
    observed_share: float = Field(description="percent of the experiment's rows")
    accept_rate: float | None = Field(description="accepts / requests; None without requests")
    accept_ci: Interval | None = Field(description="Wilson interval at the effective (clustered) sample size")
    latency_ms: dict[str, float] = Field(description='quantiles, keys "p50", "p90", "p95", "p99"; empty without rows')
    latency_mean_ms: float | None


class SrmCheck(_Frozen):
    chi2: float | None
    p_value: float | None
    dof: int
    expected: dict[str, float]
    observed: dict[str, int]
    mismatch: bool
    summary: str


class TimeBucket(_Frozen):
    start: float
    counts: dict[str, int]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval for a binomial proportion; None when ``n == 0``."""
    if n <= 0:
        return None
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(low=max(0.0, center - half), high=min(1.0, center + half))


@dataclass(frozen=True)
class ZTest:
    z: float | None
    p_value: float | None


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Pooled two-sided z-test of ``x2/n2 - x1/n1``; None values when it is undefined."""
    if n1 <= 0 or n2 <= 0:
        return ZTest(None, None)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:  # both arms all-accept or all-reject: identical, nothing to test
        return ZTest(0.0, 1.0)
    z = (x2 / n2 - x1 / n1) / se
    return ZTest(z, float(2 * stats.norm.sf(abs(z))))


def srm_check(observed: Mapping[str, int], weights: Mapping[str, float]) -> SrmCheck:
    """Chi-square goodness of fit of ``observed`` counts against the configured ``weights``.

    Arms with zero weight must see no traffic: any row on one is a mismatch by itself (the test
    statistic would be infinite). Arms with a weight but no rows count as zero observations.
    """
    arms = sorted(set(observed) | set(weights))
    obs = {a: int(observed.get(a, 0)) for a in arms}
    total = sum(obs.values())
    weighted = [a for a in arms if weights.get(a, 0) > 0]
    stray = [a for a in arms if weights.get(a, 0) <= 0 and obs[a] > 0]
    wsum = sum(weights[a] for a in weighted)
    expected = {a: (total * weights[a] / wsum if a in weighted else 0.0) for a in arms}
    if total == 0 or not weighted:
        return SrmCheck(chi2=None, p_value=None, dof=0, expected=expected, observed=obs, mismatch=False,
                        summary="no traffic yet")
    if stray:
        return SrmCheck(chi2=None, p_value=0.0, dof=len(weighted) - 1, expected=expected, observed=obs,
                        mismatch=True, summary=f"arm(s) {', '.join(stray)} have weight 0 but received traffic")
    if len(weighted) == 1:
        return SrmCheck(chi2=0.0, p_value=1.0, dof=0, expected=expected, observed=obs, mismatch=False,
                        summary="one weighted arm: nothing to compare")
    chi2, p = stats.chisquare([obs[a] for a in weighted], [expected[a] for a in weighted])
    chi2, p = float(chi2), float(p)
    mismatch = p < SRM_ALPHA
    split = " / ".join(f"{a} {100 * obs[a] / total:.1f} %" for a in weighted)
    want = " / ".join(f"{100 * weights[a] / wsum:g} %" for a in weighted)
    summary = (f"sample ratio mismatch: observed {split}, configured {want} (chi2 {chi2:.1f}, p {p:.2g} "
               f"< {SRM_ALPHA:g}): do not trust the comparison" if mismatch
               else f"observed {split} matches the configured {want} (p {p:.2g})")
    return SrmCheck(chi2=chi2, p_value=p, dof=len(weighted) - 1, expected=expected, observed=obs,
                    mismatch=mismatch, summary=summary)


def latency_quantiles(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:
        return {}
    values = np.quantile(np.asarray(latencies, dtype=float), QUANTILES)
    return {f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, values, strict=True)}
