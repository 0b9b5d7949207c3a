"""Sample-ratio mismatch on subjects, against the weights in force when each subject was assigned.

Counting every row against today's weights raises an alarm at every canary step (the rows of
earlier steps were drawn at other weights), and counts a heavy subject's requests as if each were
drawn anew. Here the unit is the subject, and only subjects *first* assigned (randomised) in the
window count, each with the arm probabilities ``p_i`` of the policy version in force at its first
assignment. With ``O`` the per-arm counts and ``E = sum p_i``, ``Cov = sum(diag p_i - p_i p_i^T)``,
the statistic ``(O - E)^T Cov^-1 (O - E)`` over all arms but one is chi-square with (arms - 1)
degrees of freedom under a working assignment, whatever the weights did in the window.

An arm with no weight in any of those versions must receive no subject: one there is a mismatch
by itself.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

SRM_ALPHA = 0.001


def srm_from_moments(observed: np.ndarray, expected: np.ndarray, cov: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """(chi2, p, dof) from per-arm observed counts ``(..., k)``, expectations and covariances ``(..., k, k)``.

    Arms with no expectation anywhere in the batch are left out of the statistic; a subject on
    one of them makes p 0.
    """
    observed, expected, cov = (np.asarray(a, float) for a in (observed, expected, cov))
    active = np.flatnonzero((expected > 0).any(axis=tuple(range(expected.ndim - 1))))
    stray = ((observed > 0) & (expected <= 0)).any(-1)
    dof = max(len(active) - 1, 0)
    if dof == 0:
        chi2 = np.zeros(observed.shape[:-1])
        return chi2, np.where(stray, 0.0, 1.0), dof
    keep = active[:-1]
    diff = (observed - expected)[..., keep]
    sub = cov[..., keep[:, None], keep[None, :]]
    sub = sub + np.eye(len(keep)) * 1e-12
    chi2 = np.einsum("...i,...i->...", diff, np.linalg.solve(sub, diff[..., None])[..., 0])
    p = np.where(stray, 0.0, stats.chi2.sf(chi2, dof))
    return chi2, p, dof


def srm_subjects(first_arm: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """SRM over subjects first assigned in the window.

    Args:
        first_arm: ``(..., m)`` arm index of each subject's first randomised assignment, -1 for a
            subject not first assigned in the window.
        probs: ``(..., m, k)`` arm probabilities in force at that assignment.

    Returns:
        (observed ``(..., k)``, chi2, p, dof).
    """
    first_arm = np.asarray(first_arm)
    probs = np.asarray(probs, float)
    k = probs.shape[-1]
    p = np.where((first_arm >= 0)[..., None], probs, 0.0)
    observed = np.stack([(first_arm == a).sum(-1) for a in range(k)], axis=-1).astype(float)
    expected = p.sum(-2)
    cov = expected[..., None] * np.eye(k) - np.matmul(p.swapaxes(-1, -2), p)
    chi2, pval, dof = srm_from_moments(observed, expected, cov)
    return observed, chi2, pval, dof
