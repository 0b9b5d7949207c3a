"""The experiment report, computed from audit rows: subjects as the unit, error rates from labelled
outcomes, SRM on first assignments, and an always-valid p-value beside the fixed-horizon one.

- Only ``randomised`` rows enter the comparison; pinned, fallback, shadow, migration and unknown
  rows are counted apart (``excluded``).
- Per arm: the request-weighted accept rate with a cluster-robust interval (Wilson at the
  effective sample size). Each treatment arm is compared with the first (control) arm on the
  mean of per-subject rates (every subject weighs one): the fixed-horizon z-test (null-restricted
  variance, valid when read once, at the planned end), the request-level z-test (secondary,
  too optimistic with sticky subjects), and the mSPRT always-valid p-value, valid however often
  it is read (see :mod:`router.experiments.sequential`).
- With labelled outcomes, FRR (genuine rejected) and FAR (impostor accepted) at the threshold,
  with intervals, EER, FRR at FAR = 1 %, DET points and distance histograms per arm; the arms are
  compared on FRR and FAR the same way as on the accept rate. Accept rate is not accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
from pydantic import Field
from scipy import stats

from router.experiments.error_rates import det_points, equal_error_rate, error_curve, frr_at_far, histogram
from router.experiments.estimators import (
    cluster_rate,
    request_level_ztest,
    subject_mean_difference,
    wilson_effective,
    z_test,
)
from router.experiments.rows import ExperimentRow
from router.experiments.sequential import DEFAULT_TAU, MIN_SUBJECTS, always_valid_p
from router.experiments.srm import SRM_ALPHA, srm_subjects
from router.experiments.stats import (
    ArmStats,
    Interval,
    SrmCheck,
    TimeBucket,
    _Frozen,
    latency_quantiles,
    srm_check,
)

METRICS = {"accept_rate": "accept rate", "frr": "FRR", "far": "FAR"}


class FirstSeen(Protocol):
    """A subject's first randomised assignment (``router.audit_store.FirstAssignment`` fits)."""

    @property
    def arm(self) -> str: ...
    @property
    def policy_version(self) -> int | None: ...


class Comparison(_Frozen):
    metric: str = Field(description="accept_rate | frr | far")
    control: str
    treatment: str
    subjects: int = Field(description="subjects behind the comparison (both arms)")
    difference: float | None = Field(description="treatment - control, mean of per-subject rates")
    difference_ci: Interval | None = Field(description="subject-level (cluster-robust) interval")
    standard_error: float | None = Field(None, description="of the difference, subject-level (cluster-robust)")
    z: float | None
    p_value: float | None = Field(description="fixed-horizon, subject-level: valid when read once, at the end")
    significant: bool
    request_p_value: float | None = Field(description="request-level z-test (secondary: ignores subjects)")
    sequential_p_value: float | None = Field(description="mSPRT always-valid p-value: valid at every read")
    sequential_significant: bool
    summary: str


class ArmErrors(_Frozen):
    arm: str
    genuine: int = Field(description="labelled genuine attempts")
    impostor: int = Field(description="labelled impostor attempts")
    frr: float | None = Field(description="genuine attempts rejected at the threshold")
    frr_ci: Interval | None
    far: float | None = Field(description="impostor attempts accepted at the threshold")
    far_ci: Interval | None
    eer: float | None = Field(description="equal error rate over all thresholds")
    frr_at_far_1pct: float | None
    threshold_at_far_1pct: int | None
    det: list[tuple[float, float]] = Field(description="(FAR, FRR) at every distinct threshold")
    genuine_hist: list[int]
    impostor_hist: list[int]


class SequentialPoint(_Frozen):
    at: float
    p_values: dict[str, float] = Field(description='"metric:treatment" -> always-valid p-value at this read')


class ExperimentReport(_Frozen):
    experiment: str
    route: str
    generated_at: float
    since: float | None
    total: int = Field(description="randomised rows compared")
    confidence: float
    threshold: float | None = Field(description="distance threshold of FAR/FRR (accept when distance <= it)")
    excluded: dict[str, int] = Field(description="rows not randomised, by kind: counted apart")
    arms: list[ArmStats]
    comparisons: list[Comparison]
    srm: SrmCheck
    errors: list[ArmErrors]
    sequential: list[SequentialPoint]
    timeline: list[TimeBucket]


class _Frame:
    """Randomised rows as arrays: subject index, arm index, time, accept, label, distance."""

    def __init__(self, rows: Sequence[ExperimentRow], arms: Sequence[str]) -> None:
        self.arms = list(arms)
        subjects = {s: i for i, s in enumerate(dict.fromkeys(r.subject_id for r in rows))}
        self.m = len(subjects)
        arm_ix = {a: i for i, a in enumerate(arms)}
        self.subject = np.array([subjects[r.subject_id] for r in rows], dtype=np.int64)
        self.arm = np.array([arm_ix[r.arm] for r in rows], dtype=np.int64)
        self.time = np.array([r.created_at for r in rows], dtype=float)
        self.accept = np.array([r.decision == "accept" for r in rows], dtype=float)
        self.label = np.array([-1 if r.genuine is None else int(r.genuine) for r in rows], dtype=np.int64)
        self.distance = np.array([-1 if r.distance is None else r.distance for r in rows], dtype=np.int64)

    def per_subject(self, arm: int, mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = mask & (self.arm == arm)
        n = np.bincount(self.subject[sel], minlength=self.m).astype(float)
        y = np.bincount(self.subject[sel], weights=values[sel], minlength=self.m)
        return n, y

    def metric(self, name: str, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows counted, event per row) of ``name``."""
        if name == "accept_rate":
            return np.ones(len(self.arm), bool), self.accept
        assert threshold is not None
        if name == "frr":
            return (self.label == 1) & (self.distance >= 0), (self.distance > threshold).astype(float)
        return (self.label == 0) & (self.distance >= 0), (self.distance <= threshold).astype(float)


def _interval(low: float, high: float) -> Interval | None:
    return None if np.isnan(low) else Interval(low=low, high=high)


def _f(v: object) -> float | None:
    x = float(v)  # type: ignore[arg-type]
    return None if np.isnan(x) else x


def _compare(frame: _Frame, metric: str, control: int, treatment: int, counted: np.ndarray, event: np.ndarray,
             confidence: float, seq_p: float | None) -> Comparison:
    c_name, t_name = frame.arms[control], frame.arms[treatment]
    n_c, y_c = frame.per_subject(control, counted, event)
    n_t, y_t = frame.per_subject(treatment, counted, event)
    est = subject_mean_difference(n_c, y_c, n_t, y_t)
    null = subject_mean_difference(n_c, y_c, n_t, y_t, null=True)
    z, p = z_test(null)
    _, p_req = request_level_ztest(n_c, y_c, n_t, y_t)
    alpha = 1 - confidence
    label = METRICS[metric]
    if (n_c > 0).sum() < 2 or (n_t > 0).sum() < 2 or np.isnan(est.value):
        return Comparison(metric=metric, control=c_name, treatment=t_name, subjects=int(est.subjects),
                          difference=None, difference_ci=None, z=None, p_value=None, significant=False,
                          request_p_value=None, sequential_p_value=seq_p, sequential_significant=False,
                          summary=f"{label}: not enough subjects to compare {t_name} with {c_name}")
    q = float(stats.norm.ppf(0.5 + confidence / 2))
    d, se = float(est.value), float(est.se)
    significant = bool(p < alpha)
    seq_sig = seq_p is not None and seq_p < alpha
    verdict = (f"{t_name} {label} {'higher' if d > 0 else 'lower'} than {c_name}" if significant
               else f"no significant {label} difference between {t_name} and {c_name}")
    seq = "–" if seq_p is None else f"{seq_p:.3g}"
    summary = (f"{verdict}: {100 * d:+.2f} points over {int(est.subjects)} subjects (fixed-horizon p {float(p):.3g}; "
               f"always-valid p {seq})")
    return Comparison(metric=metric, control=c_name, treatment=t_name, subjects=int(est.subjects), difference=d,
                      difference_ci=Interval(low=d - q * se, high=d + q * se), standard_error=_f(se), z=_f(z),
                      p_value=_f(p),
                      significant=significant, request_p_value=_f(p_req), sequential_p_value=seq_p,
                      sequential_significant=seq_sig, summary=summary)


def _sequential(frame: _Frame, metrics: Sequence[str], threshold: float | None, tau: float,
                reads: int) -> tuple[list[SequentialPoint], dict[str, float]]:
    """The always-valid p-value of every comparison at ``reads`` equally spaced times."""
    if not len(frame.time):
        return [], {}
    grid = np.linspace(frame.time.min(), frame.time.max(), reads + 1)[1:]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for metric in metrics:
        counted, event = frame.metric(metric, threshold)
        for t_ix in range(1, len(frame.arms)):
            key = f"{metric}:{frame.arms[t_ix]}"
            ds, vs = [], []
            for t in grid:
                mask = counted & (frame.time <= t)
                n_c, y_c = frame.per_subject(0, mask, event)
                n_t, y_t = frame.per_subject(t_ix, mask, event)
                est = subject_mean_difference(n_c, y_c, n_t, y_t, null=True)
                enough = min((n_c > 0).sum(), (n_t > 0).sum()) >= MIN_SUBJECTS
                ds.append(float(est.value))
                vs.append(float(est.se) ** 2 if enough else float("nan"))
            series[key] = (ds, vs)
    pvals = {k: always_valid_p(np.array(d), np.array(v), tau) for k, (d, v) in series.items()}
    points = [SequentialPoint(at=float(t), p_values={k: float(p[i]) for k, p in pvals.items()})
              for i, t in enumerate(grid)]
    return points, {k: float(p[-1]) for k, p in pvals.items()}


def _srm(first: Sequence[FirstSeen], arms: Sequence[str], weights: Mapping[str, float],
         history: Mapping[int, Mapping[str, float]]) -> SrmCheck:
    if not first:
        return SrmCheck(chi2=None, p_value=None, dof=0, expected={a: 0.0 for a in arms},
                        observed={a: 0 for a in arms}, mismatch=False, summary="no subject assigned in the window yet")
    arm_ix = {a: i for i, a in enumerate(arms)}
    probs = np.zeros((len(first), len(arms)))
    unknown = 0
    for i, f in enumerate(first):
        w = history.get(f.policy_version) if f.policy_version is not None else None
        if w is None:
            unknown += 1
            w = weights
        total = sum(max(v, 0.0) for v in w.values()) or 1.0
        for a, v in w.items():
            if a in arm_ix:
                probs[i, arm_ix[a]] = max(v, 0.0) / total
    first_arm = np.array([arm_ix.get(f.arm, -1) for f in first])
    observed, chi2, p, dof = srm_subjects(first_arm, probs)
    expected = probs.sum(0)
    obs = {a: int(observed[i]) for i, a in enumerate(arms)}
    exp = {a: float(expected[i]) for i, a in enumerate(arms)}
    mismatch = bool(p < SRM_ALPHA)
    split = " / ".join(f"{a} {obs[a]}" for a in arms)
    want = " / ".join(f"{exp[a]:.0f}" for a in arms)
    note = f" ({unknown} assigned under a policy version not on record: today's weights used)" if unknown else ""
    summary = (f"sample ratio mismatch over {len(first)} newly assigned subjects: {split}, expected {want} "
               f"(p {float(p):.2g} < {SRM_ALPHA:g}): do not trust the comparison{note}" if mismatch else
               f"{len(first)} newly assigned subjects: {split}, expected {want} at the weights in force when each "
               f"was assigned (p {float(p):.2g}){note}")
    return SrmCheck(chi2=_f(chi2), p_value=float(p), dof=dof, expected=exp, observed=obs, mismatch=mismatch,
                    summary=summary)


def _errors(frame: _Frame, rows: Sequence[ExperimentRow], arm: str, threshold: float | None,
            confidence: float) -> ArmErrors:
    ix = frame.arms.index(arm)
    genuine = [r.distance for r in rows if r.arm == arm and r.genuine is True and r.distance is not None]
    impostor = [r.distance for r in rows if r.arm == arm and r.genuine is False and r.distance is not None]
    out: dict[str, object] = {}
    for name in ("frr", "far"):
        counted, event = frame.metric(name, threshold)
        n, y = frame.per_subject(ix, counted, event)
        est = cluster_rate(n, y)
        rate = _f(est.value)
        out[name] = rate
        ci = wilson_effective(rate, _f(est.se) or 0.0, int(n.sum()), confidence) if rate is not None else None
        out[f"{name}_ci"] = _interval(*ci) if ci else None
    curve = error_curve(genuine, impostor)
    frr1, t1 = frr_at_far(curve, 0.01)
    return ArmErrors(arm=arm, genuine=len(genuine), impostor=len(impostor), eer=equal_error_rate(curve),
                     frr_at_far_1pct=frr1, threshold_at_far_1pct=t1, det=det_points(curve),
                     genuine_hist=histogram(genuine), impostor_hist=histogram(impostor), **out)  # type: ignore[arg-type]


def _timeline(rows: Sequence[ExperimentRow], arms: Sequence[str], buckets: int = 24) -> list[TimeBucket]:
    if not rows:
        return []
    t0, t1 = rows[0].created_at, rows[-1].created_at
    width = max((t1 - t0) / buckets, 1e-9)
    out = [TimeBucket(start=t0 + i * width, counts={a: 0 for a in arms}) for i in range(buckets)]
    for row in rows:
        i = min(int((row.created_at - t0) / width), buckets - 1)
        out[i].counts[row.arm] = out[i].counts.get(row.arm, 0) + 1
    return out


def build_report(
    experiment: str,
    route: str,
    rows: Iterable[ExperimentRow],
    weights: Mapping[str, float],
    *,
    generated_at: float,
    since: float | None = None,
    confidence: float = 0.95,
    first_assignments: Sequence[FirstSeen] | None = None,
    weight_history: Mapping[int, Mapping[str, float]] | None = None,
    threshold: float | None = None,
    tau: float = DEFAULT_TAU,
    reads: int = 24,
) -> ExperimentReport:
    """The whole report from the route's audit rows (any order) and the weights in force.

    Args:
        rows: the route's rows in the window (every kind; only ``randomised`` ones are compared).
        weights: the weights in force now, in arm order; the first arm is the control.
        first_assignments: subjects first assigned in the window, for SRM. Without them SRM falls
            back to the old request count against ``weights`` (labelled so).
        weight_history: policy version -> weights, for SRM.
        threshold: distance threshold of FAR/FRR; None leaves out the error-rate section.
        reads: how many equally spaced reads the sequential statistic is shown at.
    """
    rows = sorted(rows, key=lambda r: r.created_at)
    rand = [r for r in rows if r.kind == "randomised"]
    excluded = dict(Counter(r.kind for r in rows if r.kind != "randomised"))
    arms = list(weights) + sorted({r.arm for r in rand} - set(weights))
    frame = _Frame(rand, arms)
    wsum = sum(w for w in weights.values() if w > 0) or 1.0
    total = len(rand)
    per_arm: list[ArmStats] = []
    everything = np.ones(total, bool)
    for i, arm in enumerate(arms):
        n, y = frame.per_subject(i, everything, frame.accept)
        est = cluster_rate(n, y)
        count, accepts = int(n.sum()), int(y.sum())
        rate = accepts / count if count else None
        ci = wilson_effective(rate, float(est.se), count, confidence) if rate is not None else None
        latencies = [r.latency_ms for r in rand if r.arm == arm]
        per_arm.append(ArmStats(
            arm=arm, configured_weight=100.0 * max(weights.get(arm, 0.0), 0.0) / wsum, requests=count,
            accepts=accepts, subjects=int((n > 0).sum()), observed_share=100.0 * count / total if total else 0.0,
            accept_rate=rate, accept_ci=_interval(*ci) if ci else None, latency_ms=latency_quantiles(latencies),
            latency_mean_ms=float(np.mean(latencies)) if latencies else None,
        ))
    labelled = threshold is not None and bool((frame.label >= 0).any())
    metrics = ["accept_rate", *(["frr", "far"] if labelled else [])]
    sequential, seq_final = _sequential(frame, metrics, threshold, tau, reads)
    comparisons = []
    for metric in metrics:
        counted, event = frame.metric(metric, threshold)
        for t_ix in range(1, len(arms)):
            comparisons.append(_compare(frame, metric, 0, t_ix, counted, event, confidence,
                                        seq_final.get(f"{metric}:{arms[t_ix]}")))
    if first_assignments is not None:
        srm = _srm(first_assignments, arms, weights, weight_history or {})
    else:
        old = srm_check({a.arm: a.requests for a in per_arm}, weights)
        srm = old.model_copy(update={"summary": f"requests against today's weights (no subject data): {old.summary}"})
    errors = [_errors(frame, rand, a, threshold, confidence) for a in arms] if labelled else []
    return ExperimentReport(
        experiment=experiment, route=route, generated_at=generated_at, since=since, total=total,
        confidence=confidence, threshold=threshold, excluded=excluded, arms=per_arm, comparisons=comparisons,
        srm=srm, errors=errors, sequential=sequential, timeline=_timeline(rand, arms),
    )
