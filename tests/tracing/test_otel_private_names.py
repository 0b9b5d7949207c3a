"""The private OpenTelemetry names tracing/ still uses exist in the installed release.

Each has no public equivalent (public seams are used everywhere else: ``trace.get_current_span``,
``SpanProcessor.on_start/on_end``, ``TracerProvider(active_span_processor=...)``). When a release
renames or drops one, this test says which, where we use it and what to do, before a router
fails at start-up or silently exports nothing.
"""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

from tracing.exporter import FastOTLPSpanExporter


def test_the_suppress_instrumentation_key_is_still_in_the_api_context_module() -> None:
    # tracing/batch.py sets it around each export (as the SDK's own BatchSpanProcessor does) so that
    # an instrumented HTTP library does not trace the exporter's POSTs.
    key = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
    assert isinstance(key, str), (
        "opentelemetry.context._SUPPRESS_INSTRUMENTATION_KEY is gone from this opentelemetry-api: "
        "tracing/batch.py imports it. Use the replacement the SDK's BatchSpanProcessor uses now, "
        "or lower the opentelemetry-api bound in pyproject.toml."
    )


def test_the_otlp_http_exporter_still_posts_bytes_through_client_export() -> None:
    # tracing/exporter.py encodes a batch itself and hands the bytes to the exporter's HTTP client,
    # which keeps retries, compression, headers and TLS.
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    try:
        client = getattr(exporter, "_client", None)
        assert client is not None and callable(getattr(client, "export", None)), (
            "OTLPSpanExporter no longer has _client.export(bytes): tracing/exporter.py would fall back "
            "to the official encoder (~3x the CPU per span). Find the new way the exporter POSTs "
            "serialized bytes, or lower the opentelemetry-exporter-otlp-proto-http bound."
        )
        for name, why in (("_max_request_size", "the request size cap the fast path honours"),
                          ("_shutdown", "the flag that sends exports after shutdown to the official path")):
            assert hasattr(exporter, name), (
                f"OTLPSpanExporter.{name} ({why}) is gone: update tracing/exporter.py's getattr default "
                "or lower the opentelemetry-exporter-otlp-proto-http bound."
            )
    finally:
        exporter.shutdown()
    fast = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    try:
        assert fast.fast, "FastOTLPSpanExporter fell back to the official encoder with this release"
    finally:
        fast.shutdown()


@pytest.mark.parametrize("method", ["add_span_processor", "on_start", "on_end", "shutdown", "force_flush"])
def test_the_multi_processor_the_lean_tracer_extends_keeps_its_public_methods(method: str) -> None:
    # tracing.lean.SpanProcessors subclasses it and overrides add_span_processor, which
    # TracerProvider.add_span_processor calls on its active_span_processor.
    assert callable(getattr(SynchronousMultiSpanProcessor, method, None)), (
        f"opentelemetry.sdk.trace.SynchronousMultiSpanProcessor.{method} is gone: tracing.lean.SpanProcessors "
        "must be rebuilt on what the provider now accepts as active_span_processor."
    )


def test_span_context_is_still_the_tuple_the_lean_tracer_unpacks() -> None:
    # tracing/lean.py and tracing/spans.py unpack a SpanContext as a 6-tuple and build one with
    # tuple.__new__ (its constructor re-checks ids we make in range): an implementation detail.
    from opentelemetry.trace import SpanContext, TraceFlags
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE

    ctx = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), DEFAULT_TRACE_STATE)
    assert isinstance(ctx, tuple) and tuple(ctx) == (0xABC, 0xDEF, True, TraceFlags(1), DEFAULT_TRACE_STATE, True), (
        "opentelemetry.trace.SpanContext is no longer the tuple (trace_id, span_id, is_remote, trace_flags, "
        "trace_state, is_valid): tracing/lean.py (start_span) and tracing/spans.py (_start) unpack it so."
    )
    built = tuple.__new__(SpanContext, (0xABC, 0xDEF, False, TraceFlags(1), DEFAULT_TRACE_STATE, True))
    assert (built.trace_id, built.span_id, built.is_valid) == (0xABC, 0xDEF, True)
