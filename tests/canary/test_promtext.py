"""Prometheus text -> interval deltas -> canary snapshot, against the router's real metrics registry."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from canary.promtext import canary_snapshot, delta, histogram_quantile, merge, parse_samples
from router.metrics import RouterMetrics


def scrape(m: RouterMetrics):
    return parse_samples(generate_latest(m.registry).decode())


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.5], 10 in (0.5, 1]
    buckets = [(0.1, 50), (0.5, 90), (1.0, 100), (math.inf, 100)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.1 + 0.4 * 25 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    # rank in +Inf bucket -> highest finite bound; no observations -> None
    assert histogram_quantile(0.99, [(0.1, 1), (math.inf, 10)]) == pytest.approx(0.1)
    assert histogram_quantile(0.99, [(0.1, 0), (math.inf, 0)]) is None


def test_snapshot_from_two_scrapes_of_the_router_registry() -> None:
    m = RouterMetrics()
    m.upstream_requests.labels("face", "v2", "hasher-face-v2", "ok").inc(5)  # before the interval
    start = scrape(m)
    for _ in range(97):
        m.upstream_requests.labels("face", "v2", "hasher-face-v2", "ok").inc()
        m.upstream_duration.labels("face", "v2", "hasher-face-v2").observe(0.02)
    for _ in range(3):
        m.upstream_requests.labels("face", "v2", "hasher-face-v2", "timeout").inc()
        m.upstream_duration.labels("face", "v2", "hasher-face-v2").observe(0.2)
    m.upstream_requests.labels("face", "v2", "hasher-face-v2", "rejected").inc(7)  # bad input: not an error
    m.upstream_requests.labels("face", "v1", "hasher-face-v1", "error").inc(50)  # the stable arm: ignored
    m.shadow_comparisons.labels("face", "v1", "v2", "true").inc(19)
    m.shadow_comparisons.labels("face", "v1", "v2", "false").inc(1)
    m.shadow_bits.labels("face", "v1", "v2", "agree").inc(2500)
    m.shadow_bits.labels("face", "v1", "v2", "differ").inc(60)
    snap = canary_snapshot(delta(scrape(m), start), "face", "v2", window_s=30)
    assert snap.requests == 107 and snap.errors == 3
    assert snap.value("error-rate") == pytest.approx(300 / 107)
    # 97 at <= 25 ms bucket, 3 in (0.1, 0.25]; rank 99 lies in (0.1, 0.25]: 0.1 + 0.15 * 2/3
    assert snap.p99_ms == pytest.approx(1000 * (0.1 + 0.15 * 2 / 3))
    assert snap.value("decision-agreement") == pytest.approx(95.0)
    assert snap.value("bit-agreement") == pytest.approx(100 * 2500 / 2560)


def test_counter_reset_counts_from_zero_and_replicas_add_up() -> None:
    key = ("servestack_router_upstream_requests_total",
           (("arm", "v2"), ("backend", "b"), ("outcome", "ok"), ("route", "face")))
    start = {key: 100.0}
    assert delta({key: 30.0}, start)[key] == 30.0  # restarted router: 30 since the restart
    assert delta({key: 130.0}, start)[key] == 30.0
    assert merge({key: 1.0}, {key: 2.0})[key] == 3.0


def test_empty_interval_has_no_p99() -> None:
    m = RouterMetrics()
    s = scrape(m)
    snap = canary_snapshot(delta(s, s), "face", "v2", 10)
    assert snap.requests == 0 and snap.p99_ms is None and snap.value("error-rate") is None


def test_requests_left_to_a_fallback_are_canary_failures() -> None:
    """Regression: with the canary's replica ejected no try reaches it; the fallback's ok tries
    (counted under the canary arm) made a dead canary look healthy."""
    m = RouterMetrics()
    start = scrape(m)
    m.upstream_requests.labels("face", "v2", "hasher-face-v1", "ok").inc(20)  # served by the fallback
    m.fallbacks.labels("face", "hasher-face-v2", "hasher-face-v1").inc(20)
    interval = delta(scrape(m), start)
    assert canary_snapshot(interval, "face", "v2", 10).value("error-rate") == 0.0  # blind without the backend
    snap = canary_snapshot(interval, "face", "v2", 10, canary_backend="hasher-face-v2")
    assert snap.fallbacks == 20 and snap.value("error-rate") == 100.0
