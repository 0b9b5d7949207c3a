"""Dynamic batcher: Ray Serve's ``@serve.batch`` shape with Triton's knobs.

- One future per request; a request may carry several images (its rows stay together).
- A batch closes when it holds ``max_batch_size`` images or ``max_queue_delay_us`` after its
  oldest request arrived; while the engine runs, new requests queue up, so under load batches
  form back to back with no added delay.
- Shedding, at once and before any work (:class:`Overloaded`, HTTP 503 + Retry-After): more than
  ``max_queue_size`` waiting requests, or a request whose time left is shorter than the queue ahead
  of it is expected to take (the backlog in batches times a running estimate of a batch's time;
  a request that finds the queue empty is never shed this way).
- A request whose deadline passes before its batch starts is dropped (:class:`DeadlineExceeded`):
  nobody waits for its answer any more; a cancelled request (client gone) is dropped from the
  batch or its result discarded. Shed and dropped requests are counted by reason.
- The engine runs in one dedicated worker thread, never on the event loop; rows out must equal
  rows in (checked), and an engine exception fans out to every request of that batch only.
- Tracing: a ``queue_wait`` span per request; one ``batch`` span per batch that links to every
  request span it served; each request span gets ``hasher.batch.id`` / ``hasher.batch.size``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Link, Span

from trt_serving.engines.base import Outputs
from trt_serving.errors import DeadlineExceeded, Overloaded
from trt_serving.metrics import HasherMetrics

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    inputs: np.ndarray
    future: asyncio.Future[Outputs]
    enqueued_at: float
    deadline: float
    request_span: Span
    wait_span: Span | None = field(default=None)


class DynamicBatcher:
    """Collects requests into batches for ``run_batch`` (float32 [N,3,H,W] -> Outputs).

    Args:
        run_batch: the engine call; runs in ``executor`` (one thread: engines are not thread-safe).
        executor: a single-worker executor owned by the caller.
        max_batch_size: most images per engine call.
        max_queue_delay_us: longest wait for a batch to fill after its oldest request arrived.
        max_queue_size: most requests waiting; beyond it ``submit`` raises ``Overloaded``.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], Outputs], executor: ThreadPoolExecutor, *,
                 max_batch_size: int, max_queue_delay_us: int, max_queue_size: int,
                 tracer: trace.Tracer | None = None, metrics: HasherMetrics | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self._tracer = tracer or trace.NoOpTracer()
        self._metrics = metrics
        self._pending: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch_ids = itertools.count(1)
        self._last_batch_s = 0.0  # running estimate of a batch's time (0: none measured yet)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="hasher-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                log.debug("batcher loop stopped")
            self._task = None
        while self._pending:
            entry = self._pending.popleft()
            self._end_wait(entry)
            if not entry.future.done():
                entry.future.set_exception(Overloaded("the hasher is shutting down"))
        self._set_depth()

    def expected_wait_s(self) -> float:
        """How long a request queued now is expected to wait for its batch to finish."""
        backlog_batches = self._queued_images() / self.max_batch_size + 1
        return backlog_batches * self._last_batch_s

    async def submit(self, inputs: np.ndarray, *, timeout_s: float) -> Outputs:
        """Queue one request's images (float32 [k,3,H,W]); returns its rows of the batch output.

        ``timeout_s`` is the time the request has left: one that cannot be served within it is
        refused now (:class:`Overloaded`) rather than run for a caller that has given up.
        """
        if self._task is None:
            raise RuntimeError("batcher not started")
        if timeout_s <= 0:
            self._count("dropped", "deadline")
            raise DeadlineExceeded("the request's deadline had passed when it reached the batcher")
        if len(self._pending) >= self.max_queue_size:
            self._count("shed", "queue_full")
            raise Overloaded(f"queue full ({len(self._pending)} requests waiting)",
                             retry_after_s=self.expected_wait_s())
        expected = self.expected_wait_s()
        # Only behind a backlog: a request that finds the queue empty always runs, so batches keep
        # running and the estimate keeps learning (one slow batch must not shed everything after it).
        if self._pending and expected > timeout_s:
            self._count("shed", "deadline")
            raise Overloaded(f"expected wait {expected * 1000:.0f} ms exceeds the {timeout_s * 1000:.0f} ms "
                             "the request has left", retry_after_s=expected)
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        entry = _Entry(inputs=inputs, future=loop.create_future(), enqueued_at=now, deadline=now + timeout_s,
                       request_span=trace.get_current_span())
        entry.wait_span = self._tracer.start_span("queue_wait", attributes={"hasher.images": len(inputs)})
        self._pending.append(entry)
        self._set_depth()
        self._wakeup.set()
        try:
            return await entry.future
        finally:
            self._end_wait(entry)  # cancelled or failed before its batch started

    def _count(self, what: str, reason: str) -> None:
        if self._metrics is not None:
            (self._metrics.shed if what == "shed" else self._metrics.dropped).labels(reason=reason).inc()

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._pending))

    @staticmethod
    def _end_wait(entry: _Entry) -> None:
        if entry.wait_span is not None:
            entry.wait_span.end()
            entry.wait_span = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            close_at = self._pending[0].enqueued_at + self.max_queue_delay_s
            while self._queued_images() < self.max_batch_size:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            entries = self._take()
            if entries:
                await self._execute(loop, entries)

    def _queued_images(self) -> int:
        return sum(len(e.inputs) for e in self._pending if not e.future.done())

    def _take(self) -> list[_Entry]:
        """Pop the next batch: live requests up to max_batch_size images (a bigger one runs alone)."""
        taken: list[_Entry] = []
        images = 0
        now = time.monotonic()
        while self._pending:
            entry = self._pending[0]
            if entry.future.done():  # cancelled by its caller while waiting
                self._pending.popleft()
                continue
            if now > entry.deadline:
                self._pending.popleft()
                self._end_wait(entry)
                self._count("dropped", "deadline")
                entry.future.set_exception(DeadlineExceeded(
                    f"request waited {now - entry.enqueued_at:.3f} s in the queue, past its deadline"))
                continue
            if taken and images + len(entry.inputs) > self.max_batch_size:
                break
            taken.append(self._pending.popleft())
            images += len(entry.inputs)
        self._set_depth()
        return taken

    async def _execute(self, loop: asyncio.AbstractEventLoop, entries: list[_Entry]) -> None:
        batch_id = next(self._batch_ids)
        sizes = [len(e.inputs) for e in entries]
        total = sum(sizes)
        started = time.monotonic()
        links = [Link(e.request_span.get_span_context()) for e in entries
                 if e.request_span.get_span_context().is_valid]
        for e in entries:
            self._end_wait(e)
            e.request_span.set_attribute("hasher.batch.id", batch_id)
            e.request_span.set_attribute("hasher.batch.size", total)
            if self._metrics is not None:
                self._metrics.queue_wait.observe(started - e.enqueued_at)
        span = self._tracer.start_span("batch", links=links, attributes={
            "hasher.batch.id": batch_id, "hasher.batch.size": total, "hasher.batch.requests": len(entries)})
        try:
            with trace.use_span(span, end_on_exit=False):
                inputs = entries[0].inputs if len(entries) == 1 else np.concatenate([e.inputs for e in entries])
                outputs = await loop.run_in_executor(self._executor, self._run_chunked, inputs)
            if len(outputs.logits) != total or len(outputs.features) != total:
                raise RuntimeError(f"engine returned {len(outputs.logits)} rows for {total} inputs")
        except Exception as exc:  # fan out to this batch's requests; the loop keeps serving
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            log.exception("batch failed", extra={"batch_id": batch_id, "batch_size": total})
            for e in entries:
                if not e.future.done():
                    e.future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        self._last_batch_s = elapsed if not self._last_batch_s else 0.8 * self._last_batch_s + 0.2 * elapsed
        span.end()
        if self._metrics is not None:
            self._metrics.batch_size.observe(total)
            self._metrics.engine_duration.observe(elapsed)
        offset = 0
        for e, n in zip(entries, sizes, strict=True):
            if not e.future.done():
                e.future.set_result(Outputs(features=outputs.features[offset:offset + n],
                                            logits=outputs.logits[offset:offset + n]))
            offset += n

    def _run_chunked(self, inputs: np.ndarray) -> Outputs:
        """Runs in the engine thread; a request bigger than max_batch_size runs in chunks."""
        if len(inputs) <= self.max_batch_size:
            return self._run_batch(inputs)
        parts = [self._run_batch(inputs[i:i + self.max_batch_size])
                 for i in range(0, len(inputs), self.max_batch_size)]
        return Outputs(features=np.concatenate([p.features for p in parts]),
                       logits=np.concatenate([p.logits for p in parts]))
