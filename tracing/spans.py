"""A decorator / context manager for internal steps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.util.types import AttributeValue

F = TypeVar("F", bound=Callable[..., Any])


class traced:  # noqa: N801 - reads as a decorator
    """Wrap a step in a span; use as ``with traced(tracer, "decode"):`` or ``@traced(tracer, "x")``.

    Exceptions are recorded on the span and re-raised. Attributes must never hold images, codes
    or personal data: pass sizes and ids, not payloads.

    One instance may be entered by many concurrent tasks and re-entered (recursion): the open
    span of each entry is kept per task (a context variable), not on the instance.

    Args:
        tracer: the process's tracer (``Telemetry.tracer``).
        name: the span name; low cardinality (a step, not a request id).
        attributes: attributes set when the span starts.
        kind: the span kind (``CLIENT`` for an outgoing call).
        links: links to other spans, e.g. a batch span linking the request spans it serves.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        attributes: dict[str, AttributeValue] | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        links: Sequence[Link] | None = None,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes or {}
        self._kind = kind
        self._links = list(links) if links else None
        # The open entry: most instances are made for one ``with`` and entered once, so the entry
        # goes in a plain attribute (setting a context variable costs ~2 us; two per span were a
        # tenth of a sampled span's cost). An instance entered while open (by another task, or
        # again by the same one), or by a task that still has entries stacked, keeps the entry on
        # a stack per task (a context variable, made on first need). An exit pops its own task's
        # stack first and takes the attribute only when that stack is empty, which is then always
        # its own entry (exits are LIFO per task): no exit closes another task's span.
        self._entry: tuple[trace.Span, object | None] | None = None
        self._more: ContextVar[tuple[tuple[trace.Span, object | None], ...]] | None = None

    def _start(self) -> tuple[trace.Span, object | None]:
        ctx = otel_context.get_current()
        parent = trace.get_current_span(ctx)  # INVALID_SPAN (not valid) when there is none
        _, _, _, flags, _, valid = parent.get_span_context()  # a tuple: one unpack, no properties
        if valid and not flags & 1 and not parent.is_recording():
            # An unsampled trace: every sampler we configure is parent-based, so a child of this
            # span would be a non-recording span nobody sees. Skip creating it (~20 us per span
            # at the production ratio, where most requests are unsampled); the caller gets the
            # parent, whose context (same trace, not sampled) is what the child would have
            # propagated.
            return parent, None
        # start_span + attach directly: start_as_current_span stacks two generator-based context
        # managers (~15 us per span on the router's hot path, measured) for the same effect. The
        # context is passed on, so that it is looked up once.
        span = self._tracer.start_span(self._name, ctx, kind=self._kind, attributes=self._attributes,
                                       links=self._links)
        return span, otel_context.attach(trace.set_span_in_context(span, ctx))

    @staticmethod
    def _finish(span: trace.Span, token: object | None, exc: BaseException | None) -> None:
        """End ``span`` as ``use_span`` does: an ``Exception`` (not a cancellation) is recorded."""
        if token is None:
            return  # the unsampled parent stood in: nothing was started, so nothing ends
        try:
            if isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
            span.end()

    @contextmanager
    def _span(self) -> Iterator[trace.Span]:
        span, token = self._start()
        try:
            yield span
        except BaseException as exc:
            self._finish(span, token, exc)
            raise
        self._finish(span, token, None)

    def __enter__(self) -> trace.Span:
        span, token = self._start()
        stack = self._more.get() if self._more is not None else ()
        if self._entry is None and not stack:
            self._entry = (span, token)
        else:  # open already: this task's later entries stack up in its own context
            if self._more is None:
                self._more = ContextVar(f"traced:{self._name}", default=())
            self._more.set((*stack, (span, token)))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        stack = self._more.get() if self._more is not None else ()
        if stack:
            *rest, (span, token) = stack
            self._more.set(tuple(rest))  # type: ignore[union-attr]
        else:
            span, token = self._entry  # type: ignore[misc]
            self._entry = None
        self._finish(span, token, exc)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._span():
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._span():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def mark_error(span: trace.Span, message: str) -> None:
    """Mark a span failed without an exception (e.g. an upstream 5xx that we handled)."""
    span.set_status(Status(StatusCode.ERROR, message))
