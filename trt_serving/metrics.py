"""The pod's Prometheus metrics (names from docs/INTERFACES.md), on a registry per app."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COUNTED_SUFFIXES = ("/infer", "/v1/hash")


class HasherMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter("servestack_hasher_requests_total", "Hash/infer requests by HTTP status",
                                ["status"], registry=registry)
        self.request_duration = Histogram("servestack_hasher_request_duration_seconds",
                                          "Hash/infer request latency", buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("servestack_hasher_queue_depth", "Requests waiting for a batch",
                                 registry=registry)
        self.queue_wait = Histogram("servestack_hasher_queue_wait_seconds", "Time from enqueue to batch start",
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("servestack_hasher_batch_size", "Images per engine batch",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.engine_duration = Histogram("servestack_hasher_engine_duration_seconds", "Engine time per batch",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.shed = Counter("servestack_hasher_shed_total",
                            "Requests refused at once with 503 (queue full, or the deadline cannot be met)",
                            ["reason"], registry=registry)
        self.dropped = Counter("servestack_hasher_dropped_total",
                               "Queued requests dropped before their batch ran (deadline passed, client gone)",
                               ["reason"], registry=registry)
        self.inflight = Gauge("servestack_hasher_inflight_requests", "Hash/infer requests in progress",
                              registry=registry)
        self.engine_info = Gauge("servestack_hasher_engine_info",
                                 "The engine actually serving (value 1); fallbacks show here too",
                                 ["model", "version", "backend", "precision"], registry=registry)

    def set_engine(self, model: str, version: str, backend: str, precision: str) -> None:
        self.engine_info.clear()
        self.engine_info.labels(model=model, version=version, backend=backend, precision=precision).set(1)


class RequestMetricsMiddleware:
    """Pure ASGI: counts and times the hashing routes (not probes or scrapes) by final status."""

    def __init__(self, app: Any, metrics: HasherMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").endswith(COUNTED_SUFFIXES):
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.inflight.dec()
            self.metrics.requests.labels(status=str(status)).inc()
            self.metrics.request_duration.observe(time.perf_counter() - started)
