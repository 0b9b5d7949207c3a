"""W3C trace-context propagation for outgoing and incoming HTTP."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def inject_headers(
    headers: MutableMapping[str, str] | None = None, ctx: otel_context.Context | None = None
) -> MutableMapping[str, str]:
    """Add ``traceparent`` (and ``tracestate``) for the current span to ``headers``.

    Every outgoing call of ours (router -> pod, router -> explainer) passes its headers through
    here so that the callee's spans join the caller's trace.
    """
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The remote parent context carried by incoming ``headers`` (empty if none)."""
    return _PROPAGATOR.extract(headers)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as lowercase hex, or None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
