"""CPU per sampled span in one process: tracer x OTLP encoder, on the router's verify spans.

Each request makes the 7 spans of a router verify (server, auth, policy decision, balancer pick,
upstream try, template read, audit write) with their attributes, through ``traced()`` and a
bounded batch processor whose exporter encodes each batch to OTLP bytes and drops it (no network:
the export POST and the receiver are not counted). CPU is ``time.process_time`` (the encoding
thread included) over N requests after a flush; the median of ``--repeats``.

    .venv/bin/python bench/bench_spans.py [--requests 3000] [--repeats 5]

Pipelines:
  stock SDK      the SDK's tracer, BatchSpanProcessor and official encoder (SERVESTACK_TRACER=sdk,
                 SERVESTACK_OTLP_ENCODER=official)
  lean + fast    tracing.lean.LeanTracer, tracing.batch, tracing.otlp_encode (the defaults)
  lean, no encoding   LeanTracer with an exporter that drops batches unencoded: span making alone
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.trace import SpanKind, Tracer  # noqa: E402

from tracing import Telemetry, TracingSettings, setup_telemetry, traced  # noqa: E402
from tracing.batch import BoundedBatchSpanProcessor  # noqa: E402
from tracing.otlp_encode import encode_request  # noqa: E402

SPANS_PER_REQUEST = 7


class EncodeAndDrop(SpanExporter):
    def __init__(self, encode: Callable[[Sequence[ReadableSpan]], object] | None) -> None:
        self.encode = encode

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.encode is not None:
            self.encode(spans)
        return SpanExportResult.SUCCESS


def verify_spans(t: Tracer) -> None:
    """The spans of one router verify, with the router's attributes."""
    with t.start_as_current_span("POST /v1/verify", kind=SpanKind.SERVER,
                                 attributes={"http.request.method": "POST", "url.path": "/v1/verify"}) as server:
        with traced(t, "auth", {"servestack.scope": "client"}) as span:
            span.set_attribute("servestack.key_name", "bench")
        with traced(t, "policy.decide", {"servestack.route": "face"}) as span:
            span.set_attributes({"servestack.arm": "v1", "servestack.backend": "hasher-face-v1",
                                 "servestack.arm_reason": "sticky", "servestack.policy_version": "3f2a"})
        with traced(t, "balancer.pick", {"servestack.backend": "hasher-face-v1", "servestack.attempt": 1}):
            pass
        with traced(t, "upstream.hash", {"servestack.route": "face", "servestack.arm": "v1",
                                         "servestack.backend": "hasher-face-v1", "servestack.attempt": 1,
                                         "servestack.shadow": False, "server.address": "http://10.0.0.7:8001",
                                         "servestack.images": 1}, kind=SpanKind.CLIENT):
            pass
        with traced(t, "template.read", {"servestack.route": "face"}):
            pass
        with traced(t, "audit.write", {"servestack.audit_id": "0" * 32}):
            pass
        server.set_attributes({"http.route": "/v1/verify", "http.response.status_code": 200})


def pipeline(lean: bool, encode: Callable[[Sequence[ReadableSpan]], object] | None) -> Telemetry:
    """The stock pipeline batches through the SDK's BatchSpanProcessor, ours through tracing.batch."""
    tel = setup_telemetry("servestack-router", "bench", TracingSettings(endpoint=None, lean_tracer=lean))
    processor = BoundedBatchSpanProcessor if lean else BatchSpanProcessor
    tel.add_span_processor(processor(EncodeAndDrop(encode), max_queue_size=2048, max_export_batch_size=512,
                                     schedule_delay_millis=500))
    return tel


def cpu_per_span_us(tel: Telemetry, requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        verify_spans(tel.tracer)
    tel.provider.force_flush()
    return (time.process_time() - start) / (requests * SPANS_PER_REQUEST) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pipelines = {
        "stock SDK (SDK tracer, official encoder)": pipeline(False, lambda s: encode_spans(s).SerializeToString()),
        "lean + fast (LeanTracer, tracing.otlp_encode)": pipeline(True, encode_request),
        "lean, no encoding (span making alone)": pipeline(True, None),
    }
    for tel in pipelines.values():
        cpu_per_span_us(tel, 300)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):  # interleaved: drift hits every pipeline alike
        for name, tel in pipelines.items():
            results[name].append(cpu_per_span_us(tel, args.requests))
    stock = statistics.median(results["stock SDK (SDK tracer, official encoder)"])
    print(f"Command: .venv/bin/python bench/bench_spans.py --requests {args.requests} --repeats {args.repeats}")
    print()
    print(f"| pipeline ({SPANS_PER_REQUEST} verify spans per request) | CPU µs per sampled span | vs stock SDK |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"| {name} | {value:.1f} | {value / stock:.2f}x |")
    for tel in pipelines.values():
        tel.shutdown()


if __name__ == "__main__":
    main()
