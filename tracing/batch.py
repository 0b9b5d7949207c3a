"""The bounded batch span processor every process exports through.

Same contract as the SDK's ``BatchSpanProcessor`` (queue bound, batch size, schedule delay,
``force_flush``, ``shutdown``, a worker thread that exports, fork safety), with a cheaper
``on_end``: it runs on the request's path once per sampled span, and the SDK's (a sampled check
through three properties, a ``getpid`` system call, an event check) cost ~1 us per span there,
a fifth of making the span (``bench/bench_spans.py``). Here it is a deque append and a length
check; fork safety moves to an ``os.register_at_fork`` hook.

When the queue is full the oldest span is dropped (as the SDK does), counted in ``dropped`` and
logged at most once per ``_DROP_LOG_INTERVAL_S``: a slow or absent collector never blocks a
request and never grows memory without bound.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from tracing.lean import LeanSpan

log = logging.getLogger(__name__)

_DROP_LOG_INTERVAL_S = 10.0


class BoundedBatchSpanProcessor(SpanProcessor):
    """Queue ended spans (at most ``max_queue_size``) and export them from a worker thread in batches
    of at most ``max_export_batch_size``: when a batch is full, else every ``schedule_delay_millis``.

    Args:
        exporter: where batches go (the OTLP exporter; tests pass an in-memory one).
        max_queue_size: spans waiting at most; beyond it the oldest is dropped.
        max_export_batch_size: spans per ``export`` call at most.
        schedule_delay_millis: the longest a span waits when batches do not fill.
        export_timeout_millis: how long ``force_flush`` and ``shutdown`` wait by default.
    """

    def __init__(self, exporter: SpanExporter, max_queue_size: int = 2048, max_export_batch_size: int = 512,
                 schedule_delay_millis: float = 5000, export_timeout_millis: float = 30000) -> None:
        if max_queue_size < 1 or not 1 <= max_export_batch_size <= max_queue_size:
            raise ValueError("need 1 <= max_export_batch_size <= max_queue_size")
        if schedule_delay_millis <= 0:
            raise ValueError("schedule_delay_millis must be > 0")
        self._exporter = exporter
        self._max_queue = max_queue_size
        self._batch = max_export_batch_size
        self._delay_s = schedule_delay_millis / 1000
        self._timeout_s = export_timeout_millis / 1000
        self._queue: collections.deque[ReadableSpan] = collections.deque(maxlen=max_queue_size)
        self.dropped = 0
        self._drop_logged_at = 0.0
        self._shutdown = False
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._start_worker)

            def after_in_child() -> None:
                if (restart := ref()) is not None:
                    restart()

            os.register_at_fork(after_in_child=after_in_child)

    def _start_worker(self) -> None:
        """A fresh worker (also in a forked child, where the parent's thread does not exist)."""
        self._queue.clear()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._worker.start()

    # --- the request's path -------------------------------------------------------------------------
    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        if type(span) is not LeanSpan and not span.context.trace_flags.sampled:
            return  # an SDK span recorded but not sampled: not exported (LeanSpans are always sampled)
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._on_drop()  # the append below pushes the oldest span out
        queue.append(span)
        if len(queue) == self._batch:  # a full batch: wake the worker (once per threshold crossing)
            self._wake.set()

    def _on_drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= _DROP_LOG_INTERVAL_S:
            log.warning("span queue full (%d): %d spans dropped so far; the collector is slow or down",
                        self._max_queue, self.dropped)
            self._drop_logged_at = now

    # --- the worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._shutdown:
            full = self._wake.wait(self._delay_s)
            self._wake.clear()  # before exporting: a wake-up during the export is kept
            # Woken by a full batch: full batches only (the spans that arrive meanwhile wait for
            # the next batch, not a POST of their own); the delay elapsed: everything queued.
            self._export_queued(full_only=full)

    def _export_queued(self, deadline: float | None = None, full_only: bool = False) -> bool:
        """Export what is queued now, batch by batch; False if ``deadline`` passed first."""
        with self._export_lock:
            token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                queue = self._queue
                while len(queue) >= (self._batch if full_only else 1):
                    if deadline is not None and time.monotonic() > deadline:
                        return False
                    batch = [queue.popleft() for _ in range(min(self._batch, len(queue)))]
                    self._export(batch)
            finally:
                otel_context.detach(token)
        return True

    def _export(self, batch: Sequence[ReadableSpan]) -> None:
        try:
            self._exporter.export(batch)
        except Exception:  # an exporter bug must not kill the worker: the next batch may go through
            log.exception("exporting %d spans failed", len(batch))

    # --- SpanProcessor ------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export everything queued now; False when ``timeout_millis`` passed first."""
        if self._shutdown:
            return True
        timeout_s = self._timeout_s if timeout_millis is None else timeout_millis / 1000
        return self._export_queued(time.monotonic() + timeout_s)

    def shutdown(self) -> None:
        """Stop the worker, export what is left (bounded by the export timeout), shut the exporter."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._worker.join(self._timeout_s)
        self._export_queued(time.monotonic() + self._timeout_s)
        self._exporter.shutdown()
