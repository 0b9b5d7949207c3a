"""The batch span processor is bounded: a stuck or absent collector drops spans, never blocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.observability.otlp_sink import free_port
from tracing import TracingSettings, setup_telemetry


class _StuckExporter(SpanExporter):
    """An exporter whose first export hangs until released, like a collector that stopped reading."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS


def test_full_queue_drops_spans_without_blocking_requests() -> None:
    exporter = _StuckExporter()
    settings = TracingSettings(max_queue_size=8, max_export_batch_size=4, schedule_delay_ms=10)
    tel = setup_telemetry("svc", "1", settings, exporter=exporter)
    with tel.tracer.start_as_current_span("first"):
        pass
    assert exporter.entered.wait(5), "the worker never picked up the first span"

    started = time.perf_counter()
    for i in range(500):
        with tel.tracer.start_as_current_span(f"span-{i}"):
            pass
    elapsed = time.perf_counter() - started
    # 500 spans against a hung exporter: ending a span only appends to a bounded deque.
    assert elapsed < 1.0, f"ending spans blocked for {elapsed:.2f} s"

    exporter.release.set()
    assert tel.shutdown(timeout_s=5) is True
    # The one in flight, then the queue's capacity: the newest 8; the 492 older ones were dropped.
    assert exporter.exported == ["first"] + [f"span-{i}" for i in range(492, 500)]


def test_unreachable_collector_costs_requests_nothing_and_shutdown_is_bounded() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    tel = setup_telemetry("svc", "1", TracingSettings(endpoint=dead, schedule_delay_ms=10, export_timeout_ms=30_000))
    started = time.perf_counter()
    for i in range(200):
        with tel.tracer.start_as_current_span(f"span-{i}"):
            pass
    assert time.perf_counter() - started < 1.0
    time.sleep(0.2)  # the worker is now retrying against the dead endpoint (backoff, up to 30 s)
    started = time.perf_counter()
    finished = tel.shutdown(timeout_s=1.0)
    waited = time.perf_counter() - started
    assert finished is False and waited < 2.0, (finished, waited)
