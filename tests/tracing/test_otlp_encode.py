"""tracing.otlp_encode writes what the official OTLP encoder writes, field for field."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tests.observability.otlp_sink import OtlpSink
from tracing import TracingSettings, setup_telemetry
from tracing.exporter import FastOTLPSpanExporter
from tracing.lean import LeanSpan
from tracing.otlp_encode import encode_request


def _provider(service: str = "servestack-test", schema_url: str = "") -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": service, "k8s.pod.name": "p-1", "n": 3},
                                                schema_url=schema_url))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _official(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def _ours(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_request(spans))


def _remote_parent(trace_id: int = 0xABC, span_id: int = 0x1234, state: TraceState | None = None) -> trace.Context:
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                      trace_state=state)
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def test_every_field_the_sdk_produces_matches_the_official_encoder() -> None:
    provider, exporter = _provider(schema_url="https://opentelemetry.io/schemas/1.27.0")
    tracer = provider.get_tracer("router", "1.2.3", schema_url="https://example.test/schema")
    other = provider.get_tracer("hasher")
    state = TraceState([("vendor", "abc"), ("x", "1")])
    with tracer.start_as_current_span("POST /v1/verify", context=_remote_parent(state=state), kind=SpanKind.SERVER,
                                      attributes={"http.response.status_code": 200, "url.path": "/v1/verify"}):
        with tracer.start_as_current_span("upstream.hash", kind=SpanKind.CLIENT) as client:
            client.set_attributes({
                "ok": True, "nope": False, "zero": 0, "neg": -7, "big": 2**62, "ratio": 0.25, "nan-ish": -1e300,
                "empty": "", "unicode": "déjà vu ✓", "ints": (1, 2, 3), "strs": ("a", "b"), "bools": (True,),
                "floats": (0.5, -1.5), "long": "x" * 300,
            })
            client.add_event("retry", {"attempt": 2, "reason": "connect error"})
            client.add_event("bare")
            client.set_status(Status(StatusCode.ERROR, "HTTP 503"))
        link_ctx = SpanContext(0xDEF, 0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        local_ctx = SpanContext(0xDEF, 0x98, is_remote=False)
        with other.start_as_current_span("batch", links=[Link(link_ctx, {"i": 1}), Link(local_ctx)]) as batch:
            batch.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with tracer.start_as_current_span(f"k{kind.value}", kind=kind):
                pass
    with tracer.start_as_current_span("root, no parent"):
        pass
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 7
    assert _ours(spans) == _official(spans)


def test_spans_of_two_resources_and_scopes_group_like_the_official_encoder() -> None:
    (p1, e1), (p2, e2) = _provider("a"), _provider("b")
    for provider in (p1, p2):
        for scope in ("s1", "s2"):
            with provider.get_tracer(scope).start_as_current_span(f"{scope}-span"):
                pass
    a, b = list(e1.get_finished_spans()), list(e2.get_finished_spans())
    mixed = [a[0], b[0], a[1], b[1]]
    ours = _ours(mixed)
    assert ours == _official(mixed)
    assert [rs.resource.attributes[0].value.string_value for rs in ours.resource_spans] == ["a", "b"]
    assert [[s.scope.name for s in rs.scope_spans] for rs in ours.resource_spans] == [["s1", "s2"], ["s1", "s2"]]


def test_the_attribute_cache_keeps_types_apart_and_tags_per_message() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    # Same key, equal values of different types (True == 1 == 1.0): each keeps its own type.
    for value in (True, 1, 1.0, "1"):
        with tracer.start_as_current_span("s", attributes={"v": value}) as span:
            span.add_event("e", {"v": value})  # the same pair under an event: another field tag
    spans = list(exporter.get_finished_spans())
    ours = _ours(spans)
    assert ours == _official(spans)
    values = [s.attributes[0].value for s in ours.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == ["bool_value", "int_value", "double_value", "string_value"]


def test_an_unencodable_attribute_is_dropped_with_a_log_not_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = _provider()
    with provider.get_tracer("t").start_as_current_span("s", attributes={"ok": 1}) as span:
        span._attributes._dict["huge"] = 2**70  # past int64: the official encoder refuses it too
    spans = list(exporter.get_finished_spans())
    with caplog.at_level(logging.ERROR):
        ours = _ours(spans)
    assert [kv.key for kv in ours.resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok"]
    assert "huge" in caplog.text
    assert ours == _official(spans)


def test_empty_batch_encodes_to_an_empty_request() -> None:
    assert encode_request([]) == b""
    assert _ours([]) == _official([])


def test_the_exporter_delivers_through_the_official_transport(sink: OtlpSink) -> None:
    provider, memory = _provider()
    with provider.get_tracer("t").start_as_current_span("verify", attributes={"servestack.arm": "v2"}):
        pass
    exporter = FastOTLPSpanExporter(endpoint=sink.traces_url, timeout=5)
    assert exporter.fast, "the faster encoder must be the one in use with the pinned exporter"
    assert exporter.export(list(memory.get_finished_spans())) is SpanExportResult.SUCCESS
    (span,) = sink.wait_for(lambda s: len(s) == 1, timeout_s=5)
    assert (span.name, span.attributes) == ("verify", {"servestack.arm": "v2"})
    exporter.shutdown()


def test_lean_spans_of_the_common_shape_encode_like_the_official_encoder() -> None:
    """Lean spans without trace state, events or links take a path of their own: same result."""
    memory = InMemorySpanExporter()
    tel = setup_telemetry("servestack-router", "t", TracingSettings(endpoint=None))
    tel.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tel.tracer
    with tracer.start_as_current_span("POST /v1/verify", kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "POST", "n": 3, "f": 0.5, "b": True}):
        with tracer.start_as_current_span("upstream.hash", kind=SpanKind.CLIENT,
                                          attributes={"servestack.arm": "v1", "long": "x" * 300}) as span:
            span.set_status(Status(StatusCode.ERROR, "HTTP 503"))
        with tracer.start_as_current_span("with event") as span:
            span.add_event("replica ejected", {"server.address": "http://10.0.0.7:8001"})
        with tracer.start_as_current_span("ok") as span:
            span.set_status(StatusCode.OK)
    with tracer.start_as_current_span("remote child", context=_remote_parent()):
        pass
    spans = list(memory.get_finished_spans())
    assert all(type(s) is LeanSpan for s in spans) and len(spans) == 5
    assert _ours(spans) == _official(spans)
    assert _ours(spans * 3) == _official(spans * 3)  # the attribute cache warm, as in a router's batches


def test_the_exporter_refuses_a_batch_over_the_request_cap(sink: OtlpSink) -> None:
    provider, memory = _provider()
    with provider.get_tracer("t").start_as_current_span("big", attributes={"pad": "x" * 4000}):
        pass
    exporter = FastOTLPSpanExporter(endpoint=sink.traces_url, timeout=5, max_request_size=1000)
    assert exporter.export(list(memory.get_finished_spans())) is SpanExportResult.FAILURE
    assert sink.spans() == []
    exporter.shutdown()
