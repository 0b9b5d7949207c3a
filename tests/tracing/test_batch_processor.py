"""The batch span processor (tracing.batch) is bounded: a stuck or absent collector drops spans,
never blocks; batches leave when full, after the delay, on flush and at shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.procs import free_port
from tracing import Telemetry, TracingSettings, register_span_metrics, setup_telemetry
from tracing.batch import BoundedBatchSpanProcessor


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


class _Recorder(SpanExporter):
    """Keeps each batch's span names; the first ``fail`` exports raise, like a buggy exporter."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("exporter bug")
        self.batches.append([s.name for s in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


def _spans(tel: Telemetry, names: Sequence[str]) -> None:
    for name in names:
        with tel.tracer.start_as_current_span(name):
            pass


def _wait(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _with(exporter: SpanExporter, **kw: int) -> tuple[Telemetry, BoundedBatchSpanProcessor]:
    tel = setup_telemetry("svc", "1", TracingSettings(endpoint=None))
    processor = BoundedBatchSpanProcessor(exporter, **kw)
    tel.add_span_processor(processor)
    return tel, processor


def test_a_full_batch_leaves_at_once_and_a_partial_one_waits_for_the_delay_or_a_flush() -> None:
    exporter = _Recorder()
    tel, _ = _with(exporter, max_queue_size=64, max_export_batch_size=4, schedule_delay_millis=60_000)
    _spans(tel, [f"s{i}" for i in range(6)])
    assert _wait(lambda: len(exporter.batches) == 1), "a full batch must not wait for the 60 s delay"
    time.sleep(0.2)
    assert exporter.batches == [["s0", "s1", "s2", "s3"]]  # the other two wait: no POST of their own
    assert tel.provider.force_flush(5000) is True
    assert exporter.batches == [["s0", "s1", "s2", "s3"], ["s4", "s5"]]
    tel.shutdown()


def test_the_delay_sends_what_is_queued_in_batches_of_at_most_the_batch_size() -> None:
    exporter = _Recorder()
    tel, _ = _with(exporter, max_queue_size=64, max_export_batch_size=4, schedule_delay_millis=60_000)
    exporter2 = _Recorder()
    tel2, _ = _with(exporter2, max_queue_size=64, max_export_batch_size=50, schedule_delay_millis=50)
    _spans(tel2, [f"t{i}" for i in range(3)])
    assert _wait(lambda: exporter2.batches == [["t0", "t1", "t2"]]), exporter2.batches
    _spans(tel, [f"s{i}" for i in range(3)])
    tel.provider.force_flush(5000)
    _spans(tel, [f"u{i}" for i in range(10)])
    tel.provider.force_flush(5000)
    assert [len(b) for b in exporter.batches] == [3, 4, 4, 2]
    assert sum(exporter.batches, []) == [f"s{i}" for i in range(3)] + [f"u{i}" for i in range(10)]
    tel.shutdown()
    tel2.shutdown()


def test_an_exporter_error_is_logged_and_later_batches_still_leave() -> None:
    exporter = _Recorder(fail=1)
    tel, _ = _with(exporter, max_queue_size=64, max_export_batch_size=2, schedule_delay_millis=60_000)
    _spans(tel, ["lost-1", "lost-2", "kept-1", "kept-2"])
    assert _wait(lambda: exporter.batches == [["kept-1", "kept-2"]]), exporter.batches
    tel.shutdown()


def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    exporter = _StuckExporter()
    tel, processor = _with(exporter, max_queue_size=8, max_export_batch_size=4, schedule_delay_millis=10)
    _spans(tel, ["first"])
    assert exporter.entered.wait(5)
    _spans(tel, [f"span-{i}" for i in range(100)])
    assert processor.dropped == 92
    exporter.release.set()
    tel.shutdown()
    assert exporter.exported == ["first"] + [f"span-{i}" for i in range(92, 100)]


def test_shutdown_exports_the_rest_stops_the_exporter_and_ignores_later_spans() -> None:
    exporter = _Recorder()
    tel, processor = _with(exporter, max_queue_size=64, max_export_batch_size=10, schedule_delay_millis=60_000)
    _spans(tel, ["a", "b", "c"])
    processor.shutdown()
    assert exporter.batches == [["a", "b", "c"]] and exporter.shut
    _spans(tel, ["late"])
    assert processor.force_flush() is True and exporter.batches == [["a", "b", "c"]]


def test_settings_bounds_are_refused() -> None:
    for kw in ({"max_queue_size": 0}, {"max_queue_size": 4, "max_export_batch_size": 8},
               {"schedule_delay_millis": 0}):
        with pytest.raises(ValueError):
            BoundedBatchSpanProcessor(_Recorder(), **kw)


def test_drops_are_a_prometheus_counter_read_at_scrape_time() -> None:
    exporter = _StuckExporter()
    settings = TracingSettings(max_queue_size=4, max_export_batch_size=2, schedule_delay_ms=10)
    tel = setup_telemetry("svc", "1", settings, exporter=exporter)
    registry = CollectorRegistry()
    register_span_metrics(registry, "servestack_router_spans_dropped_total", tel)
    assert registry.get_sample_value("servestack_router_spans_dropped_total") == 0
    _spans(tel, ["first"])
    assert exporter.entered.wait(5)
    _spans(tel, [f"span-{i}" for i in range(10)])  # 4 fit in the queue
    assert tel.spans_dropped == 6
    assert registry.get_sample_value("servestack_router_spans_dropped_total") == 6
    assert "# TYPE servestack_router_spans_dropped_total counter" in generate_latest(registry).decode()
    exporter.release.set()
    tel.shutdown()
    # Nothing exported, nothing dropped: the counter reads 0.
    assert setup_telemetry("svc", "1", TracingSettings(endpoint=None)).spans_dropped == 0
