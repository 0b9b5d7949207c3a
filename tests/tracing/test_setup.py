"""setup_telemetry / TracingSettings: OTEL_* variables, real OTLP export (HTTP and gRPC), sampling."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry import context as otel_context
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.trace import SpanContext, TraceFlags, get_current_span, set_span_in_context
from opentelemetry.trace.span import NonRecordingSpan

from tests.observability.otlp_sink import OtlpSink, one
from tests.support.procs import free_port
from tracing import TracingSettings, setup_telemetry

# -- TracingSettings.from_env -----------------------------------------------------------------


def test_from_env_without_endpoint_exports_nothing() -> None:
    s = TracingSettings.from_env({})
    assert s.endpoint is None and s.protocol == "http/protobuf" and s.sample_ratio == 1.0


def test_base_endpoint_gets_the_http_traces_path_and_traces_endpoint_wins() -> None:
    assert TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}).endpoint == "http://c:4318/v1/traces"
    s = TracingSettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9/x"}
    )
    assert s.endpoint == "http://t:9/x"


def test_grpc_endpoint_is_used_as_given() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    s = TracingSettings.from_env(env)
    assert (s.endpoint, s.protocol) == ("http://c:4317", "grpc")


def test_sdk_disabled_drops_the_endpoint() -> None:
    env = {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert TracingSettings.from_env(env).endpoint is None


@pytest.mark.parametrize(
    ("env", "ratio"),
    [
        ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, 0.25),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, 0.1),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, 0.0),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, 1.0),
    ],
)
def test_sampler_variables(env: dict[str, str], ratio: float) -> None:
    assert TracingSettings.from_env(env).sample_ratio == ratio


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "always_on"}, "not supported"),  # not parent-based: would tear traces
        ({"OTEL_TRACES_SAMPLER_ARG": "half"}, "must be a number"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "within \\[0, 1\\]"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/protobuf or grpc"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "many"}, "must be an integer"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"}, "must not exceed"),
        ({"SERVESTACK_OTLP_ENCODER": "protobuf"}, "fast or official"),
    ],
)
def test_bad_variables_are_refused_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TracingSettings.from_env(env)


def test_encoder_choice() -> None:
    assert TracingSettings.from_env({}).fast_encoder is True
    assert TracingSettings.from_env({"SERVESTACK_OTLP_ENCODER": "Official"}).fast_encoder is False


def test_batch_processor_variables() -> None:
    s = TracingSettings.from_env(
        {
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_EXPORT_TIMEOUT": "2000",
        }
    )
    assert (s.max_queue_size, s.max_export_batch_size, s.schedule_delay_ms, s.export_timeout_ms) == (100, 10, 50, 2000)


def test_resource_attributes_from_env_and_kubernetes() -> None:
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "team=ml, model=face ,broken",
        "K8S_POD_NAME": "hasher-face-v1-abc",
        "K8S_NODE_NAME": "node-7",
        "DEPLOYMENT_ENVIRONMENT": "staging",
    }
    tel = setup_telemetry("servestack-hasher", "0.1.0", TracingSettings.from_env(env))
    attrs = dict(tel.provider.resource.attributes)
    assert attrs["service.name"] == "servestack-hasher"
    assert attrs["service.version"] == "0.1.0"
    assert attrs["deployment.environment"] == attrs["deployment.environment.name"] == "staging"
    assert attrs["k8s.pod.name"] == "hasher-face-v1-abc" and attrs["k8s.node.name"] == "node-7"
    assert attrs["team"] == "ml" and attrs["model"] == "face" and "broken" not in attrs
    assert "k8s.namespace.name" not in attrs  # absent variables add nothing
    tel.shutdown()


# -- export to a real receiver ----------------------------------------------------------------


def test_setup_from_otel_env_delivers_spans_over_http(sink: OtlpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)  # base URL, as `servestack up` passes it
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    tel = setup_telemetry("servestack-router", "0.1.0")
    with tel.tracer.start_as_current_span("verify", attributes={"servestack.arm": "v2"}) as parent:
        with tel.tracer.start_as_current_span("policy.choose"):
            pass
    tid = format(parent.get_span_context().trace_id, "032x")
    # No flush: the batch processor's own schedule must deliver them.
    spans = sink.trace(tid, until=lambda s: len(s) == 2, timeout_s=5)
    root, child = one(spans, "verify"), one(spans, "policy.choose")
    assert root.parent_span_id is None and root.attributes == {"servestack.arm": "v2"}
    assert child.parent_span_id == root.span_id == format(parent.get_span_context().span_id, "016x")
    assert tel.shutdown() is True


class _GrpcTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC receiver: the collector's TraceService on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):  # noqa: N802 - the generated service's name
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, _GrpcTraceService]]:
    service = _GrpcTraceService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield f"http://127.0.0.1:{port}", service
    server.stop(grace=None)


def test_grpc_exporter_delivers_spans_with_the_resource(grpc_receiver: tuple[str, _GrpcTraceService]) -> None:
    endpoint, service = grpc_receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    settings = TracingSettings.from_env(env)
    tel = setup_telemetry("servestack-explainer", "0.1.0", settings)
    with tel.tracer.start_as_current_span("generate") as span:
        pass
    assert tel.provider.force_flush()
    (request,) = service.requests
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "servestack-explainer"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "servestack-explainer"
    (received,) = scope_spans.spans
    assert received.name == "generate"
    assert received.span_id == span.get_span_context().span_id.to_bytes(8, "big")
    tel.shutdown()


# -- parent-based ratio sampler ---------------------------------------------------------------


def _remote_parent(sampled: bool) -> otel_context.Context:
    ctx = SpanContext(
        trace_id=random.getrandbits(128) | 1,
        span_id=random.getrandbits(64) | 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return set_span_in_context(NonRecordingSpan(ctx))


def test_parent_based_sampler_follows_the_caller_whatever_the_ratio(sink: OtlpSink) -> None:
    never = setup_telemetry("svc-ratio-0", "1", TracingSettings(endpoint=sink.traces_url, sample_ratio=0.0))
    always = setup_telemetry("svc-ratio-1", "1", TracingSettings(endpoint=sink.traces_url, sample_ratio=1.0))

    with never.tracer.start_as_current_span("root-at-0") as dropped_root:
        pass
    sampled_parent = _remote_parent(sampled=True)
    with never.tracer.start_as_current_span("child-of-sampled", context=sampled_parent) as kept_child:
        pass
    with always.tracer.start_as_current_span("child-of-unsampled", context=_remote_parent(sampled=False)) as skipped:
        pass
    with always.tracer.start_as_current_span("root-at-1") as kept_root:
        pass

    assert not dropped_root.get_span_context().trace_flags.sampled
    assert not skipped.get_span_context().trace_flags.sampled
    assert never.provider.force_flush() and always.provider.force_flush()
    spans = sink.wait_for(lambda s: {"child-of-sampled", "root-at-1"} <= {x.name for x in s}, timeout_s=5)
    # Both flushes completed before we looked: anything else would have arrived by now.
    assert sorted(s.name for s in spans) == ["child-of-sampled", "root-at-1"]
    child = one(spans, "child-of-sampled")
    parent_ctx = get_current_span(sampled_parent).get_span_context()
    assert child.trace_id == format(parent_ctx.trace_id, "032x")
    assert child.parent_span_id == format(parent_ctx.span_id, "016x")
    assert child.remote_parent is True
    assert one(spans, "root-at-1").trace_id == format(kept_root.get_span_context().trace_id, "032x")
    # Unsampled spans still carry valid ids: the trace id goes to the client and the audit record.
    assert dropped_root.get_span_context().is_valid and kept_child.get_span_context().trace_flags.sampled
    never.shutdown()
    always.shutdown()


def test_ratio_sampler_keeps_the_configured_share_of_root_traces() -> None:
    tel = setup_telemetry("svc", "1", TracingSettings(sample_ratio=0.25))
    n = 4000
    kept = 0
    for _ in range(n):
        with tel.tracer.start_as_current_span("root") as span:
            kept += span.get_span_context().trace_flags.sampled
    # Binomial(4000, 0.25): sd = 27.4; 5 sd either side cannot fail by chance in practice.
    assert abs(kept - n * 0.25) < 5 * (n * 0.25 * 0.75) ** 0.5, kept
