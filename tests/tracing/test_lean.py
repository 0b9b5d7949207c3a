"""tracing.lean makes the spans the SDK makes: same OTLP output, same sampling, same rules."""

from __future__ import annotations

import logging
import random

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tracing import TracingSettings, setup_telemetry, traced
from tracing.lean import MAX_ATTRIBUTES, LeanSpan, LeanTracer, SpanProcessors
from tracing.otlp_encode import encode_request

RESOURCE = Resource({"service.name": "servestack-test", "n": 3})


def _tracers(ratio: float = 1.0) -> tuple[tuple[trace.Tracer, InMemorySpanExporter], ...]:
    """(SDK tracer, its spans) and (lean tracer, its spans) over the same resource and sampler."""
    out = []
    for lean in (False, True):
        processor = SpanProcessors()  # what setup_telemetry gives the provider
        provider = TracerProvider(resource=RESOURCE, sampler=ParentBased(TraceIdRatioBased(ratio)),
                                  active_span_processor=processor)
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = LeanTracer("router", RESOURCE, processor, ratio) if lean else provider.get_tracer("router")
        out.append((tracer, memory))
    return tuple(out)


def _remote(trace_id: int, sampled: bool = True, state: TraceState | None = None) -> trace.Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, 0x1234, True, flags, state)))


def _script(tracer: trace.Tracer) -> None:
    """Everything our code does with spans, and the SDK's edge cases."""
    state = TraceState([("vendor", "abc")])
    with tracer.start_as_current_span("POST /v1/verify", context=_remote(0xABC, state=state), kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "POST", "url.path": "/v1/verify"}) as server:
        with traced(tracer, "policy.decide", {"servestack.route": "face"}) as span:
            span.set_attributes({"servestack.arm": "v2", "ok": True, "n": 3, "r": 0.5, "ints": [1, 2], "strs": ("a",)})
        with tracer.start_as_current_span("upstream.hash", kind=SpanKind.CLIENT) as client:
            client.add_event("retry", {"attempt": 2})
            client.set_status(StatusCode.ERROR, "HTTP 503")
            client.set_status(Status(StatusCode.UNSET))  # ignored
        link = Link(SpanContext(0xDEF, 0x99, True, TraceFlags(TraceFlags.SAMPLED)), {"i": 1})
        batch = tracer.start_span("batch", links=[link])
        batch.set_status(Status(StatusCode.OK))
        batch.set_status(Status(StatusCode.ERROR, "late"))  # OK is final
        batch.end()
        batch.set_attribute("after", "end")  # ignored: the span ended
        with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
            raise ValueError("bad image")
        server.update_name("POST /v1/verify (renamed)")
        server.set_attribute("http.response.status_code", 200)
    with tracer.start_as_current_span("unsampled caller", context=_remote(0xF00, sampled=False)) as span:
        assert not span.is_recording()


def _normalised(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    """The official encoding with ids renumbered and times and stack traces blanked."""
    request = encode_spans(spans)
    ids: dict[bytes, bytes] = {}

    def renumber(value: bytes) -> bytes:
        return ids.setdefault(value, len(ids).to_bytes(8, "big")) if value else b""

    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.span_id, s.parent_span_id = renumber(s.span_id), renumber(s.parent_span_id)
                s.trace_id = renumber(s.trace_id) if s.trace_id != (0xABC).to_bytes(16, "big") else s.trace_id
                s.start_time_unix_nano = s.end_time_unix_nano = 0
                for event in s.events:
                    event.time_unix_nano = 0
                    for kv in event.attributes:
                        if kv.key == "exception.stacktrace":
                            kv.value.string_value = "<trace>"
    return request


def test_lean_spans_export_exactly_what_sdk_spans_export() -> None:
    (sdk, sdk_spans), (lean, lean_spans) = _tracers()
    _script(sdk)
    _script(lean)
    made = list(lean_spans.get_finished_spans())
    assert [s.name for s in made] == ["policy.decide", "upstream.hash", "batch", "fails", "POST /v1/verify (renamed)"]
    assert all(isinstance(s, LeanSpan) for s in made)
    assert _normalised(made) == _normalised(list(sdk_spans.get_finished_spans()))
    # Our own encoder reads lean spans as it reads SDK spans.
    assert ExportTraceServiceRequest.FromString(encode_request(made)) == encode_spans(made)
    server = made[-1]
    assert server.parent.span_id == 0x1234 and server.context.trace_state == TraceState([("vendor", "abc")])
    assert server.context.trace_flags.sampled and made[0].parent.span_id == server.context.span_id


def test_root_sampling_is_the_sdk_ratio_samplers_decision_on_the_same_trace_id() -> None:
    random.seed(7)
    (_, _), (lean, spans) = _tracers(ratio=0.25)
    sdk_sampler = TraceIdRatioBased(0.25)
    made = [lean.start_span("root") for _ in range(4000)]
    for span in made:
        span.end()
        ctx = span.get_span_context()
        sdk_says = sdk_sampler.should_sample(None, ctx.trace_id, "root").decision is Decision.RECORD_AND_SAMPLE
        assert span.is_recording() is False and ctx.trace_flags.sampled is sdk_says
    kept = sum(s.get_span_context().trace_flags.sampled for s in made)
    assert kept == len(spans.get_finished_spans())
    assert 4000 * 0.25 - 4 * (4000 * 0.25 * 0.75) ** 0.5 < kept < 4000 * 0.25 + 4 * (4000 * 0.25 * 0.75) ** 0.5


def test_the_parents_decision_wins_whatever_the_ratio() -> None:
    (_, _), (never, never_spans) = _tracers(ratio=0.0)
    (_, _), (always, always_spans) = _tracers(ratio=1.0)
    child = never.start_span("child", context=_remote(0xA1, sampled=True))
    assert child.is_recording() and child.get_span_context().trace_id == 0xA1
    child.end()
    assert [s.name for s in never_spans.get_finished_spans()] == ["child"]
    dropped = always.start_span("child", context=_remote(0xA2, sampled=False, state=TraceState([("k", "v")])))
    ctx = dropped.get_span_context()
    assert isinstance(dropped, NonRecordingSpan) and ctx.trace_id == 0xA2 and not ctx.trace_flags.sampled
    assert ctx.trace_state == TraceState([("k", "v")])  # still propagated to the callee
    dropped.end()
    assert always_spans.get_finished_spans() == ()


def test_attribute_limits_values_and_a_second_end(caplog: pytest.LogCaptureFixture) -> None:
    ends: list[ReadableSpan] = []

    class Count(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ends.append(span)

    processor = SynchronousMultiSpanProcessor()
    processor.add_span_processor(Count())
    span = LeanTracer("t", RESOURCE, processor, 1.0).start_span("s", attributes={"first": 0})
    for i in range(MAX_ATTRIBUTES + 1):
        span.set_attribute(f"k{i}", i)
    with caplog.at_level(logging.WARNING):
        span.set_attribute("bad", object())
        span.set_attribute("none", None)
    span.set_attribute("seq", [1, 2])
    span.end()
    span.end()
    assert len(ends) == 1
    attrs = ends[0].attributes
    assert len(attrs) == MAX_ATTRIBUTES and ends[0].dropped_attributes == 3
    assert "first" not in attrs and "k0" not in attrs and "k1" not in attrs  # the oldest went first
    assert attrs["seq"] == (1, 2) and "bad" not in attrs and "none" not in attrs
    assert "invalid type object" in caplog.text


def test_setup_telemetry_chooses_the_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(setup_telemetry("s", "1", TracingSettings(endpoint=None)).tracer, LeanTracer)
    sdk = setup_telemetry("s", "1", TracingSettings(endpoint=None, lean_tracer=False)).tracer
    assert not isinstance(sdk, LeanTracer) and isinstance(sdk.start_span("x"), trace.Span)
    assert TracingSettings.from_env({"SERVESTACK_TRACER": "SDK"}).lean_tracer is False
    assert TracingSettings.from_env({}).lean_tracer is True
    with pytest.raises(ValueError, match="lean or sdk"):
        TracingSettings.from_env({"SERVESTACK_TRACER": "fast"})
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert isinstance(setup_telemetry("s", "1", TracingSettings(endpoint=None)).tracer, trace.NoOpTracer)


def test_a_processor_added_later_gets_the_lean_spans() -> None:
    tel = setup_telemetry("s", "1", TracingSettings(endpoint=None))
    memory = InMemorySpanExporter()
    tel.add_span_processor(SimpleSpanProcessor(memory))
    with tel.tracer.start_as_current_span("late"):
        pass
    (span,) = memory.get_finished_spans()
    assert span.name == "late" and span.resource.attributes["service.name"] == "s"
    assert span.instrumentation_scope.name == "s"


class _Starts(SpanProcessor):
    """A processor with a real on_start: sees each span start (with its parent context) and end."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_start(self, span: trace.Span, parent_context: object = None) -> None:
        self.events.append(("start", span.name))  # type: ignore[attr-defined]

    def on_end(self, span: ReadableSpan) -> None:
        self.events.append(("end", span.name))


def test_processors_added_between_spans_are_called_and_real_on_starts_run() -> None:
    tel = setup_telemetry("s", "1", TracingSettings(endpoint=None))
    first = InMemorySpanExporter()
    tel.add_span_processor(SimpleSpanProcessor(first))  # a no-op on_start: skipped, on_end called
    with traced(tel.tracer, "one"):
        pass
    starts = _Starts()
    tel.add_span_processor(starts)
    with traced(tel.tracer, "two"):
        open_span = tel.tracer.start_span("three")
    open_span.end()
    assert [s.name for s in first.get_finished_spans()] == ["one", "two", "three"]
    assert starts.events == [("start", "two"), ("start", "three"), ("end", "two"), ("end", "three")]
