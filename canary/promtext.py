"""Prometheus text exposition -> samples, interval deltas, and a canary snapshot (all pure).

The local source scrapes the router's ``/metrics`` at the start and at the end of an interval;
the snapshot is built from the difference, the way PromQL's ``increase()`` would see it:

- counters: ``end - start``; a value that went down means the process restarted (a counter
  reset), and then ``end`` itself is the increase, as in Prometheus;
- p99: ``histogram_quantile`` over the bucket deltas, with Prometheus's linear interpolation
  inside the bucket that holds the rank.

Metric names and labels are the router's (docs/INTERFACES.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from canary.analysis import MetricsSnapshot

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

UPSTREAM_REQUESTS = "servestack_router_upstream_requests_total"
UPSTREAM_DURATION_BUCKET = "servestack_router_upstream_duration_seconds_bucket"
SHADOW_COMPARISONS = "servestack_router_shadow_comparisons_total"
SHADOW_BITS = "servestack_router_shadow_bits_total"
FALLBACKS = "servestack_router_fallbacks_total"
ERROR_OUTCOMES = frozenset({"error", "timeout"})  # "rejected" is the input's fault, not the canary's


def parse_samples(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (sample name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def delta(end: Samples, start: Samples) -> Samples:
    """Per-series increase from ``start`` to ``end`` (counter resets count from zero)."""
    out: Samples = {}
    for key, value in end.items():
        before = start.get(key, 0.0)
        out[key] = value - before if value >= before else value
    return out


LabelMatch = str | frozenset[str] | Callable[[str], bool]


def _matches(labels: Labels, match: Mapping[str, LabelMatch]) -> bool:
    have = dict(labels)
    for name, want in match.items():
        value = have.get(name)
        if value is None:
            return False
        if isinstance(want, str):
            if value != want:
                return False
        elif isinstance(want, frozenset):
            if value not in want:
                return False
        elif not want(value):
            return False
    return True


def select(samples: Samples, name: str, **match: LabelMatch) -> Iterable[tuple[Labels, float]]:
    return ((labels, v) for (n, labels), v in samples.items() if n == name and _matches(labels, match))


def total(samples: Samples, name: str, **match: LabelMatch) -> float:
    """Sum over every series of ``name`` whose labels match (like ``sum(metric{...})``)."""
    return sum(v for _labels, v in select(samples, name, **match))


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` buckets.

    Returns None without observations. A rank in the ``+Inf`` bucket returns the highest finite
    bound (as Prometheus does); in the first bucket the lower bound is 0.
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    count = ordered[-1][1]
    if count <= 0:
        return None
    rank = q * count
    prev_le, prev_count = 0.0, 0.0
    for le, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(le):
                return prev_le
            in_bucket = cumulative - prev_count
            if in_bucket <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / in_bucket
        prev_le, prev_count = le, cumulative
    return ordered[-1][0]


def _merged_buckets(samples: Samples, name: str, **match: LabelMatch) -> list[tuple[float, float]]:
    """``sum by (le)``: bucket counts of every matching series added per bound."""
    by_le: dict[float, float] = {}
    for labels, value in select(samples, name, **match):
        le = float(dict(labels)["le"])
        by_le[le] = by_le.get(le, 0.0) + value
    return sorted(by_le.items())


def canary_snapshot(interval: Samples, route: str, canary_arm: str, window_s: float,
                    canary_backend: str | None = None) -> MetricsSnapshot:
    """The canary arm's snapshot from one interval's deltas of the router's metrics.

    Args:
        interval: ``delta(end, start)`` of two scrapes (summed over router replicas if several).
        route: the route under canary (``face``).
        canary_arm: the arm being judged (``v2``); shadow metrics match it as the ``shadow`` label.
        window_s: the interval's length, for the reasons.
        canary_backend: the arm's backend; its fallbacks count as the canary's failures.
    """
    requests = total(interval, UPSTREAM_REQUESTS, route=route, arm=canary_arm)
    errors = total(interval, UPSTREAM_REQUESTS, route=route, arm=canary_arm, outcome=ERROR_OUTCOMES)
    p99_s = histogram_quantile(0.99, _merged_buckets(interval, UPSTREAM_DURATION_BUCKET, route=route, arm=canary_arm))
    agreed = total(interval, SHADOW_COMPARISONS, route=route, shadow=canary_arm, agreement="true")
    compared = total(interval, SHADOW_COMPARISONS, route=route, shadow=canary_arm)
    bits_agreed = total(interval, SHADOW_BITS, route=route, shadow=canary_arm, result="agree")
    bits = total(interval, SHADOW_BITS, route=route, shadow=canary_arm)
    fallbacks = total(interval, FALLBACKS, route=route, from_backend=canary_backend) if canary_backend else 0.0
    return MetricsSnapshot(
        window_s=window_s, requests=requests, errors=errors, fallbacks=fallbacks,
        p99_ms=None if p99_s is None else p99_s * 1000.0,
        decisions_compared=compared, decisions_agreed=agreed, bits_compared=bits, bits_agreed=bits_agreed,
    )


def merge(*scrapes: Samples) -> Samples:
    """Add the samples of several router replicas (same series summed)."""
    out: Samples = {}
    for scrape in scrapes:
        for key, value in scrape.items():
            out[key] = out.get(key, 0.0) + value
    return out
