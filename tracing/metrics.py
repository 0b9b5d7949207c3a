"""Span export health in Prometheus: ``servestack_<component>_spans_dropped_total``.

The export queue is bounded (``tracing.batch``): when the collector is slow or down, spans are
dropped rather than requests slowed. The count lives on the processor (a plain integer on the
hot path) and is read at scrape time by :class:`SpansDroppedCollector`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tracing.setup import Telemetry


class SpansDroppedCollector(Collector):
    """A counter ``name`` (``servestack_<component>_spans_dropped_total``) read from ``telemetry``
    at each scrape."""

    def __init__(self, name: str, telemetry: Telemetry) -> None:
        self.name = name
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, "spans dropped because the export queue was full "
                                  "(the trace collector is slow or down)", value=self.telemetry.spans_dropped)


def register_span_metrics(registry: CollectorRegistry, name: str, telemetry: Telemetry) -> None:
    """Export ``telemetry``'s span drops on ``registry`` as the counter ``name``, spelled out by
    each component (``servestack_router_spans_dropped_total``: docs/INTERFACES.md's names)."""
    registry.register(SpansDroppedCollector(name, telemetry))
