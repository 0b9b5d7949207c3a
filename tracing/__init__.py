"""OpenTelemetry setup shared by every ServeStack process.

A leaf package: it imports nothing of ours. Each process calls :func:`setup_telemetry` once in
its app factory, keeps the returned :class:`Telemetry` on ``app.state`` and wraps its ASGI app
with :class:`TraceMiddleware`; outgoing HTTP calls carry the context via :func:`inject_headers`.
"""

from tracing.logs import configure_json_logging
from tracing.metrics import register_span_metrics
from tracing.middleware import TraceMiddleware
from tracing.propagation import current_ids, inject_headers
from tracing.setup import Telemetry, TracingSettings, setup_telemetry
from tracing.spans import traced

__all__ = [
    "Telemetry",
    "TraceMiddleware",
    "TracingSettings",
    "configure_json_logging",
    "current_ids",
    "inject_headers",
    "register_span_metrics",
    "setup_telemetry",
    "traced",
]
