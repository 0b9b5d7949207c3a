"""Stable N-arm assignment: which arm owns each of the route's sticky buckets, and how weight moves.

A route's ``BUCKETS`` sticky buckets are divided among its arms as explicit ranges (an
:class:`Allocation`). When the weights change, :func:`rebalance` frees buckets only from arms
whose share went down and hands them only to arms whose share went up; an arm whose share did
not change keeps exactly its buckets. So a subject (a bucket) moves from arm X to arm Y only when
weight moved from X to Y, for any number of arms and any sequence of moves.

Cumulative ranges in arm order (the previous scheme) do not have this property at three or more
arms: moving 20 points from a to c in 80/10/10 -> 60/10/30 shifted b's whole range, moving about
10 % of all subjects a -> b and b -> c.

The allocation is persisted in the policy (``RouteSpec.allocation``) so every replica and every
restart agrees on it. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BUCKETS = 10_000
Ranges = list[tuple[int, int]]  # half-open [start, end) bucket ranges, ascending


def ideal_counts(weights: Mapping[str, float], buckets: int = BUCKETS) -> dict[str, float]:
    """Each arm's exact share of ``buckets`` (weights are relative; zero and negative mean none)."""
    total = sum(max(w, 0.0) for w in weights.values())
    if total <= 0:
        raise ValueError("at least one arm needs a positive weight")
    return {a: buckets * max(w, 0.0) / total for a, w in weights.items()}


def _largest_remainder(ideal: Mapping[str, float], total: int) -> dict[str, int]:
    counts = {a: math.floor(v) for a, v in ideal.items()}
    order = sorted(ideal, key=lambda a: -(ideal[a] - counts[a]))  # stable: ties keep arm order
    for a in order[: total - sum(counts.values())]:
        counts[a] += 1
    return counts


def _merge(ranges: Sequence[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for s, e in sorted(ranges):
        if s >= e:
            continue
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


@dataclass(frozen=True)
class Allocation:
    """Arm -> half-open bucket ranges; together the ranges cover ``[0, buckets)`` exactly once."""

    ranges: Mapping[str, tuple[tuple[int, int], ...]]
    buckets: int = BUCKETS

    def __post_init__(self) -> None:
        flat = sorted((s, e, a) for a, rs in self.ranges.items() for s, e in rs)
        pos = 0
        for s, e, a in flat:
            if not (isinstance(s, int) and isinstance(e, int)) or s != pos or e <= s:
                raise ValueError(f"allocation ranges must tile [0, {self.buckets}) without gaps or overlaps "
                                 f"(arm {a!r} has [{s}, {e}) where {pos} was expected)")
            pos = e
        if pos != self.buckets:
            raise ValueError(f"allocation ranges cover [0, {pos}), not [0, {self.buckets})")
        object.__setattr__(self, "_starts", [s for s, _, _ in flat])
        object.__setattr__(self, "_owners", [a for _, _, a in flat])

    @classmethod
    def from_weights(cls, weights: Mapping[str, float], buckets: int = BUCKETS) -> Allocation:
        """A fresh allocation: contiguous ranges in arm order, sizes by largest remainder."""
        counts = _largest_remainder(ideal_counts(weights, buckets), buckets)
        ranges, pos = {}, 0
        for arm in weights:
            ranges[arm] = ((pos, pos + counts[arm]),) if counts[arm] else ()
            pos += counts[arm]
        return cls(ranges, buckets)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Sequence[Sequence[int]]], buckets: int = BUCKETS) -> Allocation:
        """From the policy's ``{arm: [[start, end], ...]}`` (validated)."""
        ranges = {}
        for arm, rs in spec.items():
            if any(len(r) != 2 for r in rs):
                raise ValueError(f"allocation of arm {arm!r}: each range is [start, end]")
            ranges[arm] = tuple((int(s), int(e)) for s, e in rs)
        return cls(ranges, buckets)

    def to_spec(self) -> dict[str, list[list[int]]]:
        return {a: [[s, e] for s, e in rs] for a, rs in self.ranges.items()}

    def arm_of(self, bucket: int) -> str:
        """The arm owning ``bucket`` (0 <= bucket < buckets)."""
        i = bisect.bisect_right(self._starts, bucket) - 1  # type: ignore[attr-defined]
        return self._owners[i]  # type: ignore[attr-defined]

    def counts(self) -> dict[str, int]:
        return {a: sum(e - s for s, e in rs) for a, rs in self.ranges.items()}

    def matches(self, weights: Mapping[str, float]) -> bool:
        """True when every arm holds its share of ``weights`` to within one bucket, and no other arm holds any."""
        ideal = ideal_counts(weights, self.buckets)
        counts = self.counts()
        return all(abs(counts.get(a, 0) - ideal.get(a, 0.0)) < 1 for a in {*ideal, *counts})


def _targets(counts: Mapping[str, int], ideal: Mapping[str, float], direction: Mapping[str, int],
             buckets: int) -> dict[str, int]:
    """New bucket counts: near ``ideal``, never below the current count for a gainer (+1) nor above it
    for a loser (-1), exactly the current count for an unchanged arm (0); they sum to ``buckets``."""
    lo = {a: counts[a] if d >= 0 else 0 for a, d in direction.items()}
    hi = {a: counts[a] if d <= 0 else buckets for a, d in direction.items()}
    target = {a: min(max(round(ideal[a]), lo[a]), hi[a]) for a in direction}
    while (excess := sum(target.values()) - buckets) != 0:
        if excess > 0:
            movable = [a for a in direction if target[a] > lo[a]]
            a = max(movable, key=lambda a: target[a] - ideal[a])
            target[a] -= 1
        else:
            movable = [a for a in direction if target[a] < hi[a]]
            a = max(movable, key=lambda a: ideal[a] - target[a])
            target[a] += 1
    return target


def rebalance(current: Allocation, weights: Mapping[str, float],
              old_weights: Mapping[str, float] | None = None) -> Allocation:
    """``current`` moved to ``weights``, moving buckets only from arms that lost share to arms that gained it.

    Args:
        current: the allocation in force.
        weights: the new weights, in arm order (arms absent from ``current`` start with no buckets;
            arms of ``current`` absent here lose all of theirs).
        old_weights: the weights ``current`` was made for. With them, an arm's direction is the
            sign of its exact share change; without them (a policy file edited by hand) it is read
            from the bucket counts, an arm within one bucket of its new share counting as unchanged.

    Returns:
        The new allocation. Buckets leave a losing arm from its highest ones down and fill the
        gaining arms in arm order from the lowest free bucket up.
    """
    buckets = current.buckets
    ideal = ideal_counts(weights, buckets)
    counts = current.counts()
    arms = list(weights) + [a for a in current.ranges if a not in weights]
    ideal = {a: ideal.get(a, 0.0) for a in arms}
    counts = {a: counts.get(a, 0) for a in arms}
    if old_weights is not None:
        old_ideal = ideal_counts(old_weights, buckets)
        direction = {a: _sign(ideal[a] - old_ideal.get(a, 0.0), 1e-9 * buckets) for a in arms}
    else:
        direction = {a: _sign(ideal[a] - counts[a], 1.0) for a in arms}
    target = _targets(counts, ideal, direction, buckets)
    freed: list[tuple[int, int]] = []
    kept: dict[str, Ranges] = {}
    for arm in arms:
        rs = list(current.ranges.get(arm, ()))
        give = counts[arm] - target[arm]
        while give > 0:
            s, e = rs.pop()
            take = min(give, e - s)
            if e - take > s:
                rs.append((s, e - take))
            freed.append((e - take, e))
            give -= take
        kept[arm] = rs
    pool = _merge(freed)
    for arm in arms:
        need = target[arm] - counts[arm]
        while need > 0:
            s, e = pool.pop(0)
            take = min(need, e - s)
            kept[arm].append((s, s + take))
            if s + take < e:
                pool.insert(0, (s + take, e))
            need -= take
    return Allocation({a: tuple(_merge(kept[a])) for a in weights}, buckets)


def _sign(x: float, tolerance: float) -> int:
    return 0 if abs(x) < tolerance else (1 if x > 0 else -1)
