"""A decorator / context manager for internal steps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.util.types import AttributeValue

F = TypeVar("F", bound=Callable[..., Any])


class traced:  # noqa: N801 - reads as a decorator
    """Wrap a step in a span; use as ``with traced(tracer, "decode"):`` or ``@traced(tracer, "x")``.

    Exceptions are recorded on the span and re-raised. Attributes must never hold images, codes
    or personal data (DESIGN.md): pass sizes and ids, not payloads.

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
        # A stack of open entries per task: a plain attribute would be overwritten when two
        # coroutines enter the same instance, and the first exit would close the wrong span.
        self._open: ContextVar[tuple[AbstractContextManager[trace.Span], ...]] = ContextVar(
            f"traced:{name}", default=()
        )

    @contextmanager
    def _span(self) -> Iterator[trace.Span]:
        with self._tracer.start_as_current_span(
            self._name,
            kind=self._kind,
            attributes=self._attributes,
            links=self._links,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span

    def __enter__(self) -> trace.Span:
        cm = self._span()
        span = cm.__enter__()
        self._open.set((*self._open.get(), cm))
        return span

    def __exit__(self, *exc: Any) -> bool | None:
        *rest, cm = self._open.get()
        self._open.set(tuple(rest))
        return cm.__exit__(*exc)

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
