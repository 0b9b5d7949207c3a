"""Error-rate gates: judge a canary on FRR and FAR from labelled outcomes, with always-valid bounds.

A canary is read every interval, so a bound that holds only at one planned look would let a
chance excursion through (or halt a good canary) far more often than its confidence says. The
bounds here are the mSPRT confidence sequence of the subject-level difference ``canary -
stable`` (Johari et al., 2017), valid at every interval at once::

    h = sqrt(2 V (V + tau^2) / tau^2 * (log(1 / alpha) + log((V + tau^2) / V) / 2))

Two modes, in percent points of the rate:

- ``non-inferiority`` ("canary FRR at most stable FRR + 1 point, 95 %"): passes once the upper
  bound is <= ``max``; fails when the lower bound is above ``max``; otherwise not yet judged
  (the canary holds until the labels say).
- ``no-harm`` ("canary FAR at most stable FAR"): fails when the lower bound is above ``max``
  (the canary is worse with that confidence); passes otherwise.

Pure: the differences arrive in :class:`canary.analysis.MetricsSnapshot` from a source that reads
the router's experiment report (:mod:`canary.sources.experiment_report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ErrorMetric = Literal["frr", "far"]
DEFAULT_TAU = 0.02


@dataclass(frozen=True)
class RateDifference:
    """``canary - stable`` of one error rate over subjects: estimate, standard error, subjects."""

    difference: float
    se: float
    subjects: int


def always_valid_bounds(d: float, se: float, confidence: float, tau: float = DEFAULT_TAU) -> tuple[float, float]:
    """The mSPRT confidence sequence around ``d`` at ``confidence`` (a rate difference, not points)."""
    v = se * se
    if v <= 0:
        return (d, d)
    t2 = tau * tau
    alpha = 1 - confidence
    h = math.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / alpha) + 0.5 * math.log((v + t2) / v)))
    return (d - h, d + h)


class ErrorGate(BaseModel):
    """One gate: ``{metric: frr, max: 1, confidence: 95, mode: non-inferiority}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    metric: ErrorMetric
    max: float = Field(0.0, ge=0, le=100, description="allowed increase over the stable arm, percent points")
    confidence: float = Field(95.0, ge=50, lt=100, description="percent")
    mode: Literal["non-inferiority", "no-harm"] = "non-inferiority"
    min_subjects: int = Field(30, ge=2, description="labelled subjects (both arms) before judging")

    def judge(self, diff: RateDifference | None) -> tuple[bool | None, str]:
        """(passed, text): passed None when not judged yet."""
        label = self.metric.upper()
        if diff is None or diff.subjects < self.min_subjects or not math.isfinite(diff.se):
            n = 0 if diff is None else diff.subjects
            return None, f"{label} vs stable: not enough labelled subjects ({n} < {self.min_subjects})"
        low, high = always_valid_bounds(diff.difference, diff.se, self.confidence / 100)
        shown = (f"{label} canary - stable {100 * diff.difference:+.2f} points "
                 f"[{100 * low:+.2f}, {100 * high:+.2f}] at {self.confidence:g} %")
        if 100 * low > self.max:
            return False, f"{shown}: above +{self.max:g}"
        if self.mode == "no-harm" or 100 * high <= self.max:
            return True, f"{shown}: within +{self.max:g}"
        return None, f"{shown}: not yet within +{self.max:g}"
