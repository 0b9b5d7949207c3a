"""A lean tracer: the OpenTelemetry SDK's span pipeline at a fraction of the CPU per span.

The SDK's ``Tracer.start_span`` + ``Span.end`` cost ~25-45 us per sampled span on the router's CPU
(BENCHMARKS.md): sampler objects, a lock per span, attribute validation under a lock per key
(``BoundedAttributes``), a ``ReadableSpan`` copy at the end, self-metrics. The router makes ~6
spans per verify, so at 100 % sampling that was a fifth of its CPU per request.

:class:`LeanTracer` makes the same spans with less:

* It is an OpenTelemetry API ``Tracer``; its spans are API ``Span`` objects (context propagation,
  ``use_span``, ``traced()`` unchanged) and SDK ``ReadableSpan`` objects (every exporter, the OTLP
  encoders and the in-memory test exporter read them).
* Ended spans go to the provider's span processors (the batch processor and its OTLP exporter),
  each called directly; an ``on_start`` known to do nothing (the SDK's and our processors') is
  not called. Processors added to the provider later are picked up at the next span.
* Sampling is ``ParentBased(TraceIdRatioBased(ratio))``, the sampler ``setup_telemetry`` always
  configures, decided inline: a valid parent's sampled flag, else the trace id's low 64 bits
  against the same bound as the SDK's. Unsampled spans are ``NonRecordingSpan`` as in the SDK.
* Limits are the SDK defaults: 128 attributes (a new one beyond drops the oldest), events and
  links per span, counted as dropped. Attribute values: primitives as they are, sequences as
  tuples, mappings as dicts; anything else (None included) is dropped with a warning.

What it leaves out: pluggable samplers and id generators, per-span locks (a span is changed and
ended by the code that started it; a second ``end()`` is ignored), the SDK's self-metrics and its
``_on_ending`` hook. Fields most spans never change (events, links, drop counts, status) are
class-level defaults until first changed.
``SERVESTACK_TRACER=sdk`` switches back to the SDK's tracer.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import attrgetter
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

MAX_ATTRIBUTES = MAX_EVENTS = MAX_LINKS = 128  # the SDK's SpanLimits defaults
_PRIMITIVE = (str, bool, int, float, bytes)
_PRIMITIVE_TYPES = frozenset(_PRIMITIVE)
UNSET_STATUS = Status(StatusCode.UNSET)  # every span's status until set (one shared object)
_LOW64 = TraceIdRatioBased.TRACE_ID_LIMIT
# Flags of a new span: sampled or not; our ids are random (W3C level 2 "random" flag, as the SDK).
_FLAGS = {f: TraceFlags(f) for f in range(4)}
_RANDOM = TraceFlags.RANDOM_TRACE_ID


# on_start of the processors we configure does nothing: skip the call (spans end through on_end).
_NOOP_ON_START = frozenset({SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start})


class _Processors:
    """The span processors to call: all of them on end, the ones with a real ``on_start`` on start."""

    __slots__ = ("ending", "starting")

    def __init__(self, ending: tuple[SpanProcessor, ...], starting: tuple[SpanProcessor, ...]) -> None:
        self.ending, self.starting = ending, starting


class SpanProcessors(SynchronousMultiSpanProcessor):
    """The provider's processors (its ``active_span_processor``), as the SDK's multi-processor, that
    also keeps the tuples a :class:`LeanTracer` calls: every processor added through the public
    ``add_span_processor`` is recorded here, so the tracer never reads the SDK's private list."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = _Processors((), ())

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        calls = self.calls
        starting = calls.starting
        if type(span_processor).on_start not in _NOOP_ON_START:
            starting = (*starting, span_processor)
        self.calls = _Processors((*calls.ending, span_processor), starting)  # one swap: readers see either


def _clean(key: str, value: Any) -> Any:
    """The value as stored: primitives as they are, sequences as tuples, mappings as dicts (each
    cleaned likewise); None, or anything else, is dropped with a warning (returns None)."""
    if isinstance(value, _PRIMITIVE):
        return value
    if isinstance(value, Sequence):
        items = tuple(_clean(key, v) for v in value)
        return None if any(v is None for v in items) else items
    if isinstance(value, Mapping):
        mapping = {str(k): _clean(key, v) for k, v in value.items()}
        return None if any(v is None for v in mapping.values()) else mapping
    log.warning("invalid type %s for attribute %r; dropped", type(value).__name__, key)
    return None


def _field(attr: str) -> Any:
    """A read-only property returning ``attr`` of the span."""
    return property(attrgetter(attr))


def _random_id(bits: int) -> int:
    n = 0
    while n == 0:  # 0 is the invalid id
        n = random.getrandbits(bits)
    return n


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span; read by exporters as a ``ReadableSpan`` once ended (then immutable)."""

    # ReadableSpan's fields that most spans never change: class-level defaults, shadowed per
    # instance on first change (one store fewer per field and span).
    _end_time: int | None = None
    _dropped_attributes = 0
    _events: Sequence[Event] = ()  # a list once an event is added
    _dropped_events = 0
    _links: Sequence[Link] = ()
    _dropped_links = 0
    _status = UNSET_STATUS
    _record_exception = True
    _set_status_on_exception = True

    def __init__(self, tracer: LeanTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Mapping[str, Any] | None, links: Sequence[Link],
                 start_time: int | None, record_exception: bool, set_status_on_exception: bool) -> None:
        # Our own fields (read by this class's properties), not ReadableSpan.__init__: a keyword
        # call of 13 arguments per span for values the properties below return as they are.
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope
        if attributes:
            # The common case, a few primitive values, is one dict copy; anything else goes the long way.
            if len(attributes) <= MAX_ATTRIBUTES and _PRIMITIVE_TYPES.issuperset(map(type, attributes.values())):
                self._attributes: dict[str, AttributeValue] = dict(attributes)
            else:
                self._attributes = {}
                self.set_attributes(attributes)
        else:
            self._attributes = {}
        if links:
            valid = [link for link in links if link and (link.context.is_valid or link.attributes)]
            self._links = valid[:MAX_LINKS]
            self._dropped_links = len(valid) - len(self._links)
        self._start_time = start_time if start_time is not None else time_ns()
        self._tracer = tracer
        if not record_exception:
            self._record_exception = False
        if not set_status_on_exception:
            self._set_status_on_exception = False

    # --- ReadableSpan -------------------------------------------------------------------------
    # Every field is read through a property of this class: the fields are ours, whatever the
    # SDK's ReadableSpan names its own.
    name = _field("_name")
    context = _field("_context")
    kind = _field("_kind")
    parent = _field("_parent")
    start_time = _field("_start_time")
    end_time = _field("_end_time")
    status = _field("_status")
    resource = _field("_resource")
    instrumentation_scope = _field("_instrumentation_scope")
    instrumentation_info = property(lambda self: None)  # deprecated in the SDK; the scope says it

    @property
    def events(self) -> Sequence[Event]:
        return tuple(self._events)

    @property
    def links(self) -> Sequence[Link]:
        return tuple(self._links)

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        return MappingProxyType(self._attributes)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._dropped_events

    @property
    def dropped_links(self) -> int:
        return self._dropped_links

    # --- trace.Span -------------------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        if type(value) not in _PRIMITIVE:  # the common case skips the checks
            value = _clean(key, value)
            if value is None:
                return
        if key not in self._attributes and len(self._attributes) >= MAX_ATTRIBUTES:
            del self._attributes[next(iter(self._attributes))]  # as the SDK: the oldest one goes
            self._dropped_attributes += 1
        self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling add_event on an ended span.")
            return
        if len(self._events) >= MAX_EVENTS:
            self._dropped_events += 1
            return
        clean = {k: c for k, v in (attributes or {}).items() if (c := _clean(k, v)) is not None}
        if not self._events:
            self._events = []
        self._events.append(Event(name, clean, timestamp))  # type: ignore[attr-defined]

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end_time is not None or not (context.is_valid or attributes):
            return
        if len(self._links) >= MAX_LINKS:
            self._dropped_links += 1
            return
        if not self._links:
            self._links = []
        self._links.append(Link(context, attributes))  # type: ignore[attr-defined]

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET is ignored, a description only goes with a StatusCode.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        for p in self._tracer._processors().ending:
            p.on_end(self)

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


class LeanTracer(trace.Tracer):
    """Spans of one instrumentation scope, sampled parent-based with a ratio for roots.

    Args:
        name: the instrumentation scope (the service name, as ``provider.get_tracer(name)``).
        resource: the provider's resource.
        processor: the provider's span processor (a multi-processor: processors added to the
            provider later are called too).
        sample_ratio: the root sampling ratio in [0, 1].
    """

    def __init__(self, name: str, resource: Resource, processor: SpanProcessor, sample_ratio: float) -> None:
        self.scope = InstrumentationScope(name)
        self.resource = resource
        self.processor = processor
        self.sample_ratio = sample_ratio
        self._bound = TraceIdRatioBased.get_bound_for_rate(sample_ratio)
        self._procs = _Processors((processor,), (processor,))

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
                   links: Sequence[Link] | None = (), start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        parent: SpanContext | None
        # A SpanContext is a tuple: one unpack instead of a property call per field. No span in the
        # context gives INVALID_SPAN, whose context is not valid.
        trace_id, _, _, parent_flags, state, valid = parent = trace.get_current_span(context).get_span_context()
        if valid:
            sampled, random_id = parent_flags & 1, parent_flags & _RANDOM
        else:
            parent, state, random_id = None, DEFAULT_TRACE_STATE, _RANDOM
            trace_id = _random_id(128)
            sampled = (trace_id & _LOW64) < self._bound
        # SpanContext(...) re-checks the ids' ranges; ours are in range and non-zero by construction.
        span_context = tuple.__new__(SpanContext, (trace_id, _random_id(64), False,
                                                   _FLAGS[(1 if sampled else 0) | random_id], state, True))
        if not sampled:
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(self, name, span_context, parent, kind, attributes, links or (), start_time,
                        record_exception, set_status_on_exception)
        procs = self._processors()
        for p in procs.starting:
            p.on_start(span, parent_context=context)
        return span

    def _processors(self) -> _Processors:
        """The provider's processors now (one may be added at any time), with the no-op starters out."""
        if isinstance(self.processor, SpanProcessors):
            return self.processor.calls
        return self._procs  # another processor (a multi-processor fans out itself): called as it is

    @contextmanager
    def start_as_current_span(self, name: str, context: otel_context.Context | None = None,
                              kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
                              links: Sequence[Link] | None = (), start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                               set_status_on_exception)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current
