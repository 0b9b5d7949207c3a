"""Error rates from labelled outcomes: FAR and FRR at a threshold, EER, FRR at FAR = 1 %, DET points.

A verification accepts when its distance is at most the threshold. Among *impostor* attempts
(the probe is not the claimed subject) an accept is a false accept; among *genuine* attempts a
reject is a false reject. A version that accepts more may simply accept impostors: versions are
judged on these two rates, not on the accept rate.

Distances are integers (Hamming, 0..128), so every threshold can be evaluated from the stored
distances: the DET curve is (FAR(t), FRR(t)) for each t. Intervals are over subjects (the claimed
subject is the cluster), see :mod:`router.experiments.estimators`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_DISTANCE = 128


@dataclass(frozen=True)
class Curve:
    """FAR and FRR at every integer threshold 0..MAX_DISTANCE (accept when distance <= t)."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def error_curve(genuine: Sequence[int], impostor: Sequence[int], max_distance: int = MAX_DISTANCE) -> Curve:
    """FAR(t) = share of impostor distances <= t, FRR(t) = share of genuine distances > t (NaN without data)."""
    t = np.arange(max_distance + 1)
    g = np.bincount(np.clip(np.asarray(genuine, int), 0, max_distance), minlength=max_distance + 1)
    i = np.bincount(np.clip(np.asarray(impostor, int), 0, max_distance), minlength=max_distance + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        far = np.cumsum(i) / i.sum() if i.sum() else np.full(t.shape, np.nan)
        frr = 1 - np.cumsum(g) / g.sum() if g.sum() else np.full(t.shape, np.nan)
    return Curve(t, far, frr)


def equal_error_rate(curve: Curve) -> float | None:
    """The rate where FAR and FRR cross, linearly interpolated between adjacent thresholds."""
    if np.isnan(curve.far).any() or np.isnan(curve.frr).any():
        return None
    diff = curve.far - curve.frr  # rises from <= 0 to >= 0 as t grows
    idx = int(np.argmax(diff >= 0))
    if idx == 0:
        return float((curve.far[0] + curve.frr[0]) / 2)
    d0, d1 = diff[idx - 1], diff[idx]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(curve.far[idx - 1] + w * (curve.far[idx] - curve.far[idx - 1]))


def frr_at_far(curve: Curve, far_target: float = 0.01) -> tuple[float | None, int | None]:
    """FRR at the largest threshold whose FAR is at most ``far_target``: (FRR, threshold)."""
    if np.isnan(curve.far).any() or np.isnan(curve.frr).any():
        return None, None
    ok = np.flatnonzero(curve.far <= far_target)
    if len(ok) == 0:
        return None, None
    t = int(ok[-1])
    return float(curve.frr[t]), t


def det_points(curve: Curve) -> list[tuple[float, float]]:
    """(FAR, FRR) pairs, one per threshold where either changes (the DET curve's corners)."""
    if np.isnan(curve.far).any() or np.isnan(curve.frr).any():
        return []
    pts: list[tuple[float, float]] = []
    for far, frr in zip(curve.far.tolist(), curve.frr.tolist(), strict=True):
        if not pts or pts[-1] != (far, frr):
            pts.append((far, frr))
    return pts


def histogram(distances: Sequence[int], bins: int = 32, max_distance: int = MAX_DISTANCE) -> list[int]:
    """Counts of distances in ``bins`` equal bins over 0..max_distance."""
    edges = np.linspace(0, max_distance + 1, bins + 1)
    counts, _ = np.histogram(np.asarray(distances, float), bins=edges)
    return [int(c) for c in counts]
