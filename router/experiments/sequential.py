"""Always-valid monitoring: the mixture sequential probability ratio test (mSPRT).

A canary reads the test at every interval; a fixed-horizon p-value read that often rejects a
true null far more often than its alpha. The mSPRT (Johari, Pekelis, Walsh: "Always valid
inference", 2017) mixes the likelihood ratio of a normal estimate ``d`` with variance ``V`` over
a normal prior ``N(0, tau^2)`` on the true difference:

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

``Lambda`` is a nonnegative martingale under the null, so by Ville's inequality
``P(sup_t Lambda_t >= 1/alpha) <= alpha``: the running minimum of ``1/Lambda`` is a p-value that
stays valid however often (and whenever) it is read. ``tau`` is the size of difference the test is
tuned to find fastest (two points of a rate by default); it does not affect validity.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TAU = 0.02
MIN_SUBJECTS = 100  # per arm: below this the normal approximation of a mean of skewed subject rates fails


def msprt_log_lr(d: np.ndarray, var: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """log Lambda for estimates ``d`` with variances ``var`` (NaN or zero variance read 0: no evidence)."""
    d, var = np.asarray(d, float), np.asarray(var, float)
    ok = np.isfinite(d) & np.isfinite(var) & (var > 0)
    v = np.where(ok, var, 1.0)
    t2 = tau * tau
    out = 0.5 * np.log(v / (v + t2)) + np.where(ok, d, 0.0) ** 2 * t2 / (2 * v * (v + t2))
    return np.where(ok, out, 0.0)


def always_valid_p(d: np.ndarray, var: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Always-valid p-values along the last axis (the reads, oldest first): running min of ``1/Lambda``."""
    p = np.minimum(1.0, np.exp(-msprt_log_lr(d, var, tau)))
    return np.minimum.accumulate(p, axis=-1)
