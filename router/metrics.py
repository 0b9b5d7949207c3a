"""Prometheus metrics of the router (names fixed by docs/INTERFACES.md) and the HTTP middleware.

Every app builds its own :class:`RouterMetrics` on its own ``CollectorRegistry`` so that several
apps (tests) can live in one process.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router.policy import TrafficPolicy

# Latency buckets from 0.5 ms (router overhead) to 30 s (an explanation).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "servestack_router_"
        self.http_requests = Counter(p + "http_requests_total", "HTTP requests", ["method", "path", "status"],
                                     registry=r)
        self.http_duration = Histogram(p + "http_request_duration_seconds", "HTTP request duration",
                                       ["method", "path"], buckets=_BUCKETS, registry=r)
        self.upstream_requests = Counter(p + "upstream_requests_total", "calls to pods, per try",
                                         ["route", "arm", "backend", "outcome"], registry=r)
        self.upstream_duration = Histogram(p + "upstream_duration_seconds", "pod call duration, per try",
                                           ["route", "arm", "backend"], buckets=_BUCKETS, registry=r)
        self.inflight = Gauge(p + "inflight_requests", "calls in flight per backend", ["backend"], registry=r)
        self.retries = Counter(p + "retries_total", "retries (another replica)", ["backend"], registry=r)
        self.retry_budget_exhausted = Counter(p + "retry_budget_exhausted_total",
                                              "retries refused by the retry budget", ["backend"], registry=r)
        self.ejections = Counter(p + "ejections_total", "replicas ejected as outliers", ["backend"], registry=r)
        self.admission_refused = Counter(p + "admission_refused_total",
                                         "hasher calls refused by admission control (503 overloaded)", ["backend"],
                                         registry=r)
        self.deadline_exceeded = Counter(p + "deadline_exceeded_total",
                                         "hasher calls not sent or abandoned: the request's deadline ran out",
                                         ["backend"], registry=r)
        self.fallbacks = Counter(p + "fallbacks_total", "requests served by a fallback backend",
                                 ["route", "from_backend", "to_backend"], registry=r)
        self.shadow_comparisons = Counter(p + "shadow_comparisons_total", "shadowed decisions compared",
                                          ["route", "primary", "shadow", "agreement"], registry=r)
        self.shadow_bits = Counter(p + "shadow_bits_total", "code bits compared on shadowed requests",
                                   ["route", "primary", "shadow", "result"], registry=r)
        self.shadow_skipped = Counter(p + "shadow_skipped_total", "shadow calls not made or not compared",
                                      ["route", "reason"], registry=r)
        self.decisions = Counter(p + "decisions_total", "verification decisions", ["decision"], registry=r)
        self.policy_weight = Gauge(p + "policy_weight", "current arm weights", ["route", "arm"], registry=r)
        self.policy_reloads = Counter(p + "policy_reloads_total", "policy swaps and refusals", ["result"], registry=r)
        self.keys_reloads = Counter(p + "keys_reloads_total", "keys file reloads (file) and refusals (invalid)",
                                    ["result"], registry=r)
        self.subject_locked = Counter(p + "subject_locked_total",
                                      "verifications refused because the subject is locked", registry=r)
        self.policy_version = Gauge(p + "policy_version", "version of the policy in force (from its source)",
                                    registry=r)
        self.ratelimit_store_errors = Counter(p + "ratelimit_store_errors_total",
                                              "rate-limit store calls that failed", registry=r)
        self.ratelimit_store_up = Gauge(p + "ratelimit_store_up", "1 when the last rate-limit store call worked",
                                        registry=r)
        self.rate_limited = Counter(p + "rate_limited_total", "requests refused by the rate limit", ["key"], registry=r)
        self.audit_commit = Histogram(p + "audit_commit_duration_seconds", "group commit duration",
                                      buckets=_BUCKETS, registry=r)
        self.migrations = Counter(p + "template_migrations_total", "templates enrolled in shadow",
                                  ["route", "arm", "outcome"], registry=r)

    def set_weights(self, policy: TrafficPolicy) -> None:
        self.policy_weight.clear()
        for route in policy.spec.routes:
            for arm, weight in policy.weights(route).items():
                self.policy_weight.labels(route, arm).set(weight)


class HttpMetricsMiddleware:
    """Pure ASGI: count and time every request by its route template (bounded label values)."""

    def __init__(self, app: Any, metrics: RouterMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method, path, str(status)).inc()
            self.metrics.http_duration.labels(method, path).observe(time.perf_counter() - start)
