"""A/A (and A/B) simulation of canary experiments, vectorised over many experiments at once.

Each experiment has ``subjects`` subjects with Zipf-distributed traffic (a few subjects send most
requests) and a per-subject error propensity (Beta-distributed: some subjects are hard to
verify). Assignment is sticky: a subject's bucket is uniform, the canary arm owns the buckets
below its weight, and the weight moves the way a canary moves it (only primary -> canary
subjects move). The report is read at the end of every interval. The canary arm's propensities
are raised by ``effect`` (0 for A/A).

What is measured per experiment, at every read: the subject-level SRM test (first assignments
against the weights then in force), the old SRM (all requests against the weights now), the
subject-level fixed-horizon test, the old request-level test and the mSPRT always-valid p-value.
Used by ``tests/router/experiments/test_simulation.py`` and ``bench/bench_abtest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from router.experiments.estimators import cluster_difference, request_level_ztest, subject_mean_difference, z_test
from router.experiments.sequential import DEFAULT_TAU, MIN_SUBJECTS, always_valid_p
from router.experiments.srm import SRM_ALPHA, srm_subjects

CANARY_WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True)
class SimConfig:
    experiments: int = 1000
    subjects: int = 2000
    requests_per_interval: float = 2000.0
    zipf_s: float = 1.0
    base_rate: float = 0.05  # mean error propensity (e.g. FRR on genuine attempts)
    propensity_concentration: float = 20.0  # Beta(a, b) with a + b = this: smaller = more spread
    effect: float = 0.0  # added to the canary arm's propensities
    weights: tuple[float, ...] = CANARY_WEIGHTS
    alpha: float = 0.05
    tau: float = DEFAULT_TAU
    seed: int = 16
    subject_means: bool = True
    chunk: int = 100  # experiments per vectorised batch (memory: chunk x subjects x 8 bytes per array)


@dataclass
class SimResult:
    config: SimConfig
    srm_alarm_per_read: float = 0.0
    srm_alarm_final: float = 0.0
    srm_alarm_any_read: float = 0.0
    old_srm_alarm_final: float = 0.0
    fixed_subject: float = 0.0
    fixed_request: float = 0.0
    fixed_subject_peeking: float = 0.0
    sequential_peeking: float = 0.0
    sequential_final_p: list[float] = field(default_factory=list)

    def rows(self) -> list[tuple[str, float]]:
        return [
            (f"SRM alarm (subjects, p < {SRM_ALPHA:g}), per read", self.srm_alarm_per_read),
            ("SRM alarm (subjects), final read", self.srm_alarm_final),
            ("SRM alarm (subjects), any read", self.srm_alarm_any_read),
            ("old SRM alarm (requests vs current weights), final read", self.old_srm_alarm_final),
            (f"fixed-horizon, subject-level, alpha {self.config.alpha:g}, final read", self.fixed_subject),
            ("fixed-horizon, request-level (old), final read", self.fixed_request),
            ("fixed-horizon, subject-level, read every interval", self.fixed_subject_peeking),
            ("sequential (mSPRT), read every interval", self.sequential_peeking),
        ]


def _zipf_shares(subjects: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, subjects + 1) ** s
    return w / w.sum()


def _chunk(cfg: SimConfig, rng: np.random.Generator, e: int) -> dict[str, np.ndarray]:
    m, k_reads = cfg.subjects, len(cfg.weights)
    shares = _zipf_shares(m, cfg.zipf_s)
    a = cfg.base_rate * cfg.propensity_concentration
    b = (1 - cfg.base_rate) * cfg.propensity_concentration
    prop = rng.beta(a, b, size=(e, m))
    bucket = rng.random((e, m))
    weights = np.asarray(cfg.weights)
    n_c = np.zeros((e, m))
    y_c = np.zeros((e, m))
    n_t = np.zeros((e, m))
    y_t = np.zeros((e, m))
    first_arm = np.full((e, m), -1)
    first_w = np.zeros((e, m))
    out = {k: np.zeros((e, k_reads)) for k in ("srm_p", "old_srm_p", "fixed_p", "request_p", "d", "var")}
    for k, w in enumerate(weights):
        n = rng.poisson(cfg.requests_per_interval * shares, size=(e, m)).astype(float)
        canary = bucket < w
        p = np.clip(prop + cfg.effect * canary, 0.0, 1.0)
        y = rng.binomial(n.astype(np.int64), p).astype(float)
        new = (first_arm < 0) & (n > 0)
        first_arm = np.where(new, canary.astype(int), first_arm)
        first_w = np.where(new, w, first_w)
        n_c += np.where(canary, 0, n)
        y_c += np.where(canary, 0, y)
        n_t += np.where(canary, n, 0)
        y_t += np.where(canary, y, 0)
        probs = np.stack([1 - first_w, first_w], axis=-1)
        _, _, out["srm_p"][:, k], _ = srm_subjects(first_arm, probs)
        req_c, req_t = n_c.sum(-1), n_t.sum(-1)
        total = req_c + req_t
        old_chi2 = (req_c - total * (1 - w)) ** 2 / (total * (1 - w)) + (req_t - total * w) ** 2 / (total * w)
        out["old_srm_p"][:, k] = stats.chi2.sf(old_chi2, 1)
        diff = subject_mean_difference if cfg.subject_means else cluster_difference
        est = diff(n_c, y_c, n_t, y_t, null=True)
        _, out["fixed_p"][:, k] = z_test(est)
        _, out["request_p"][:, k] = request_level_ztest(n_c, y_c, n_t, y_t)
        few = np.minimum((n_c > 0).sum(-1), (n_t > 0).sum(-1)) < MIN_SUBJECTS
        out["d"][:, k] = est.value
        out["var"][:, k] = np.where(few, np.nan, est.se**2)
    out["seq_p"] = always_valid_p(out["d"], out["var"], cfg.tau)
    return out


def simulate(cfg: SimConfig) -> SimResult:
    """Run ``cfg.experiments`` experiments and return the share of them where each test fired."""
    rng = np.random.default_rng(cfg.seed)
    parts = []
    done = 0
    while done < cfg.experiments:
        e = min(cfg.chunk, cfg.experiments - done)
        parts.append(_chunk(cfg, rng, e))
        done += e
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    alpha = cfg.alpha
    return SimResult(
        config=cfg,
        srm_alarm_per_read=float((res["srm_p"] < SRM_ALPHA).mean()),
        srm_alarm_final=float((res["srm_p"][:, -1] < SRM_ALPHA).mean()),
        srm_alarm_any_read=float((res["srm_p"] < SRM_ALPHA).any(-1).mean()),
        old_srm_alarm_final=float((res["old_srm_p"][:, -1] < SRM_ALPHA).mean()),
        fixed_subject=float((res["fixed_p"][:, -1] < alpha).mean()),
        fixed_request=float((res["request_p"][:, -1] < alpha).mean()),
        fixed_subject_peeking=float((res["fixed_p"] < alpha).any(-1).mean()),
        sequential_peeking=float((res["seq_p"][:, -1] < alpha).mean()),
        sequential_final_p=res["seq_p"][:, -1].tolist(),
    )
