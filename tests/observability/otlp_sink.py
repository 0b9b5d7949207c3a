"""A real OTLP/HTTP receiver on 127.0.0.1 for tests: oteltap, kept running on its own thread.

oteltap's receiver is asyncio-based and hands each received span to whoever is awaiting *at
that moment*; spans that arrive before a test starts waiting are gone. ``OtlpSink`` subscribes
as soon as the receiver starts and keeps every span, so a test (sync or async, any event loop,
or a session fixture shared by many tests) asks afterwards: "the spans of trace X".

The receiver runs on a private event loop in a daemon thread, which is why one sink can serve a
synchronous session fixture and async tests alike.

Import it as ``from tests.observability.otlp_sink import OtlpSink`` (pytest's importlib mode
resolves ``tests`` as a namespace package rooted at the repository).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from tests.support.procs import free_port

# Span.flags bits of the OTLP protocol: bit 8 says whether bit 9 is known; bit 9 = parent is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class CapturedSpan:
    """One received span, decoded to hex ids and plain attribute values."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", ...
    attributes: dict[str, Any]
    links: tuple[tuple[str, str, dict[str, Any]], ...]  # (trace_id, span_id, attributes)
    status: str  # "UNSET", "OK", "ERROR"
    remote_parent: bool | None  # None when the exporter did not say
    start_ns: int
    end_ns: int
    events: tuple[str, ...] = field(default=())

    @classmethod
    def from_proto(cls, span: Span) -> CapturedSpan:
        flags = span.flags
        return cls(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex() or None,
            name=span.name,
            kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
            attributes={a.key: _value(a.value) for a in span.attributes},
            links=tuple(
                (ln.trace_id.hex(), ln.span_id.hex(), {a.key: _value(a.value) for a in ln.attributes})
                for ln in span.links
            ),
            status={0: "UNSET", 1: "OK", 2: "ERROR"}[span.status.code],
            remote_parent=bool(flags & _IS_REMOTE) if flags & _HAS_IS_REMOTE else None,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            events=tuple(e.name for e in span.events),
        )


class OtlpSink:
    """oteltap on 127.0.0.1:<port>, collecting every span it receives.

    Use as a context manager (``with OtlpSink() as sink:``) or ``start()`` / ``stop()``.
    ``endpoint`` is the OTLP base URL to give a process (OTEL_EXPORTER_OTLP_ENDPOINT or
    ``servestack up --otlp-endpoint``); ``traces_url`` the full OTLP/HTTP traces URL.
    """

    def __init__(self, port: int | None = None, *, keep_spans: bool = True) -> None:
        self.port = port or free_port()
        # keep_spans=False only counts (benchmarks: decoding every span would steal their CPU).
        self.keep_spans = keep_spans
        self.received = 0
        self._spans: list[CapturedSpan] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.endpoint}/v1/traces"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> OtlpSink:
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"otlp-sink-{self.port}", daemon=True)
        self._thread.start()
        ready.result(timeout=timeout_s)  # re-raises a bind failure here, in the test's thread
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"OTLP sink on port {self.port} did not stop within {timeout_s} s")
        self._thread = None

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: Future[None]) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        receiver = OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=self.port))
        try:
            await receiver.start()
        except Exception as exc:  # handed to start() in the caller's thread, which raises it
            ready.set_exception(exc)
            return
        collector = asyncio.create_task(self._collect(receiver))
        await asyncio.sleep(0)  # let the collector subscribe before anyone sends
        ready.set_result(None)
        try:
            await self._stopped.wait()
        finally:
            await receiver.stop()  # closes the channel: the collector's stream ends
            await collector

    async def _collect(self, receiver: OtelTapHttpProtobufReceiver) -> None:
        async for span in receiver.stream_traces():
            captured = CapturedSpan.from_proto(span) if self.keep_spans else None
            with self._cond:
                self.received += 1
                if captured is not None:
                    self._spans.append(captured)
                self._cond.notify_all()

    # -- queries -----------------------------------------------------------------------------

    def spans(self) -> list[CapturedSpan]:
        """Every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()

    def wait_for(
        self, predicate: Callable[[list[CapturedSpan]], bool], timeout_s: float = 10.0
    ) -> list[CapturedSpan]:
        """Block until ``predicate(all spans so far)`` holds; return the spans.

        Raises:
            TimeoutError: with a summary of what did arrive, so a failure says what is missing.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self._spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{s.name} ({s.trace_id[:8]})" for s in self._spans})
                    raise TimeoutError(f"after {timeout_s} s the sink holds {len(self._spans)} spans: {names}")
                self._cond.wait(left)
            return list(self._spans)

    def trace(
        self,
        trace_id: str,
        *,
        until: Callable[[Sequence[CapturedSpan]], bool] | None = None,
        timeout_s: float = 10.0,
    ) -> list[CapturedSpan]:
        """The spans of one trace, once ``until(those spans)`` holds (default: at least one)."""
        done = until or (lambda spans: len(spans) > 0)
        spans = self.wait_for(lambda all_: done([s for s in all_ if s.trace_id == trace_id]), timeout_s)
        return [s for s in spans if s.trace_id == trace_id]


def by_name(spans: Sequence[CapturedSpan], name: str) -> list[CapturedSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[CapturedSpan], name: str) -> CapturedSpan:
    """The only span called ``name``; fails with the names present when there is not exactly one."""
    found = by_name(spans, name)
    assert len(found) == 1, f"expected one span {name!r}, got {len(found)} among {sorted(s.name for s in spans)}"
    return found[0]
