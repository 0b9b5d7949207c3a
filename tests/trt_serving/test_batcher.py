"""Dynamic batcher, the Ray Serve way: block the engine on an Event, assert nothing completes early."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from trt_serving.batcher import DynamicBatcher
from trt_serving.engines.base import Outputs
from trt_serving.errors import DeadlineExceeded, Overloaded
from trt_serving.metrics import HasherMetrics


class FakeEngine:
    """Echoes row ids (input[:, 0, 0, 0]) as logits; optionally blocks until released."""

    def __init__(self, block: bool = False):
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.started = threading.Event()
        self.batches: list[list[float]] = []
        self.fail_next = False

    def run(self, batch: np.ndarray) -> Outputs:
        self.started.set()
        self.release.wait(10)
        self.batches.append(batch[:, 0, 0, 0].tolist())
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine exploded")
        ids = batch[:, 0, 0, 0]
        return Outputs(features=np.repeat(ids[:, None], 512, axis=1), logits=np.repeat(ids[:, None], 128, axis=1))


def rows(*ids: float) -> np.ndarray:
    x = np.zeros((len(ids), 3, 2, 2), np.float32)
    x[:, 0, 0, 0] = ids
    return x


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=1)
    yield executor
    executor.shutdown(wait=True)


async def started(engine: FakeEngine) -> None:
    await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)


def make(engine: FakeEngine, pool: ThreadPoolExecutor, **kw) -> DynamicBatcher:
    cfg = {"max_batch_size": 4, "max_queue_delay_us": 20_000, "max_queue_size": 8, **kw}
    b = DynamicBatcher(engine.run, pool, **cfg)
    b.start()
    return b


def test_config_validated() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(FakeEngine().run, ThreadPoolExecutor(1), max_batch_size=0, max_queue_delay_us=0,
                       max_queue_size=1)


async def test_requests_batch_together_and_get_their_own_rows(pool) -> None:
    engine = FakeEngine()
    b = make(engine, pool)
    results = await asyncio.gather(*(b.submit(rows(i, i + 0.5), timeout_s=5) for i in (1.0, 2.0)))
    assert engine.batches == [[1.0, 1.5, 2.0, 2.5]]  # one batch, order kept
    assert results[0].logits[:, 0].tolist() == [1.0, 1.5]
    assert results[1].logits[:, 0].tolist() == [2.0, 2.5]
    await b.stop()


async def test_nothing_completes_while_engine_blocked_and_next_batch_waits(pool) -> None:
    engine = FakeEngine(block=True)
    b = make(engine, pool, max_batch_size=2, max_queue_delay_us=0)
    first = asyncio.create_task(b.submit(rows(1), timeout_s=5))
    await started(engine)
    later = [asyncio.create_task(b.submit(rows(v), timeout_s=5)) for v in (2, 3, 4)]
    await asyncio.sleep(0.05)
    assert not first.done() and not any(t.done() for t in later)
    assert b.queue_depth == 3
    engine.release.set()
    await asyncio.gather(first, *later)
    # While blocked, requests queued up and then ran in full batches of max_batch_size.
    assert engine.batches == [[1.0], [2.0, 3.0], [4.0]]
    await b.stop()


async def test_batch_closes_after_queue_delay_when_not_full(pool) -> None:
    engine = FakeEngine()
    b = make(engine, pool, max_batch_size=8, max_queue_delay_us=30_000)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await b.submit(rows(1), timeout_s=5)
    assert loop.time() - t0 >= 0.025  # waited for companions
    await b.stop()


async def test_overflow_raises_overloaded_with_retry_after(pool) -> None:
    engine = FakeEngine(block=True)
    metrics = HasherMetrics(CollectorRegistry())
    b = make(engine, pool, max_batch_size=1, max_queue_delay_us=0, max_queue_size=2, metrics=metrics)
    running = asyncio.create_task(b.submit(rows(1), timeout_s=5))
    await started(engine)
    queued = [asyncio.create_task(b.submit(rows(v), timeout_s=5)) for v in (2, 3)]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as info:
        await b.submit(rows(9), timeout_s=5)
    assert info.value.status == 503 and "Retry-After" in info.value.headers
    assert metrics.registry.get_sample_value("servestack_hasher_shed_total", {"reason": "queue_full"}) == 1
    engine.release.set()
    await asyncio.gather(running, *queued)
    await b.stop()


async def test_deadline_exceeded_before_batch_starts(pool) -> None:
    engine = FakeEngine(block=True)
    metrics = HasherMetrics(CollectorRegistry())
    b = make(engine, pool, max_batch_size=1, max_queue_delay_us=0, metrics=metrics)
    running = asyncio.create_task(b.submit(rows(1), timeout_s=5))
    await started(engine)
    late = asyncio.create_task(b.submit(rows(2), timeout_s=0.01))
    await asyncio.sleep(0.05)
    engine.release.set()
    await running
    with pytest.raises(DeadlineExceeded):
        await late
    assert engine.batches == [[1.0]]  # the expired request never reached the engine
    assert metrics.registry.get_sample_value("servestack_hasher_dropped_total", {"reason": "deadline"}) == 1
    with pytest.raises(DeadlineExceeded):  # no time left on arrival: refused before it queues
        await b.submit(rows(3), timeout_s=0)
    assert metrics.registry.get_sample_value("servestack_hasher_dropped_total", {"reason": "deadline"}) == 2
    assert engine.batches == [[1.0]]
    await b.stop()


async def test_request_that_cannot_meet_its_deadline_is_shed_at_once(pool) -> None:
    engine = FakeEngine(block=True)
    metrics = HasherMetrics(CollectorRegistry())
    b = make(engine, pool, max_batch_size=4, max_queue_delay_us=0, metrics=metrics)
    first = asyncio.create_task(b.submit(rows(1), timeout_s=5))
    await started(engine)
    await asyncio.sleep(0.2)  # the first batch takes >= 0.2 s: the estimate of a batch's time
    engine.release.set()
    await first
    assert b.expected_wait_s() >= 0.2
    # An empty queue: served however short its time (the estimate must keep learning).
    assert (await b.submit(rows(2), timeout_s=0.05)).logits[0, 0] == 2.0
    engine.release.clear()
    running = asyncio.create_task(b.submit(rows(5), timeout_s=5))
    await asyncio.sleep(0.05)
    backlog = asyncio.create_task(b.submit(rows(6), timeout_s=5))  # waits behind the running batch
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Overloaded) as info:
        await b.submit(rows(7), timeout_s=0.05)
    assert loop.time() - t0 < 0.05  # refused now, not after waiting
    assert info.value.status == 503 and info.value.code == "overloaded" and "Retry-After" in info.value.headers
    assert metrics.registry.get_sample_value("servestack_hasher_shed_total", {"reason": "deadline"}) == 1
    queued = asyncio.create_task(b.submit(rows(3), timeout_s=5))  # time enough: queued and served
    engine.release.set()
    await asyncio.gather(running, backlog)
    assert (await queued).logits[0, 0] == 3.0
    assert engine.batches == [[1.0], [2.0], [5.0], [6.0, 3.0]]
    await b.stop()


async def test_cancelled_request_is_dropped_from_its_batch(pool) -> None:
    engine = FakeEngine(block=True)
    b = make(engine, pool, max_batch_size=4, max_queue_delay_us=0)
    running = asyncio.create_task(b.submit(rows(1), timeout_s=5))
    await started(engine)
    gone = asyncio.create_task(b.submit(rows(2), timeout_s=5))
    kept = asyncio.create_task(b.submit(rows(3), timeout_s=5))
    await asyncio.sleep(0.01)
    gone.cancel()
    engine.release.set()
    await running
    assert (await kept).logits[0, 0] == 3.0
    assert gone.cancelled()
    assert engine.batches == [[1.0], [3.0]]
    await b.stop()


async def test_engine_error_fails_only_its_batch(pool) -> None:
    engine = FakeEngine()
    engine.fail_next = True
    b = make(engine, pool, max_batch_size=2, max_queue_delay_us=10_000)
    bad = await asyncio.gather(b.submit(rows(1), timeout_s=5), b.submit(rows(2), timeout_s=5),
                               return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in bad)
    ok = await b.submit(rows(3), timeout_s=5)  # the loop survives
    assert ok.logits[0, 0] == 3.0
    await b.stop()


async def test_row_count_mismatch_is_an_error(pool) -> None:
    def short(batch: np.ndarray) -> Outputs:
        return Outputs(features=np.zeros((1, 512)), logits=np.zeros((1, 128)))

    b = DynamicBatcher(short, pool, max_batch_size=4, max_queue_delay_us=0, max_queue_size=4)
    b.start()
    with pytest.raises(RuntimeError, match="1 rows for 2 inputs"):
        await b.submit(rows(1, 2), timeout_s=5)
    await b.stop()


async def test_large_request_runs_alone_in_chunks(pool) -> None:
    engine = FakeEngine()
    b = make(engine, pool, max_batch_size=2, max_queue_delay_us=0)
    out = await b.submit(rows(1, 2, 3, 4, 5), timeout_s=5)
    assert out.logits[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert engine.batches == [[1, 2], [3, 4], [5]]
    await b.stop()


async def test_batch_span_links_request_spans_and_metrics(pool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    metrics = HasherMetrics(CollectorRegistry())
    engine = FakeEngine()
    b = DynamicBatcher(engine.run, pool, max_batch_size=4, max_queue_delay_us=20_000, max_queue_size=4,
                       tracer=tracer, metrics=metrics)
    b.start()

    async def one(v: float) -> None:
        with tracer.start_as_current_span(f"request-{v}"):
            await b.submit(rows(v), timeout_s=5)

    await asyncio.gather(one(1), one(2))
    await b.stop()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    batch = spans["batch"]
    requests = [spans["request-1"], spans["request-2"]]
    assert {link.context.span_id for link in batch.links} == {r.context.span_id for r in requests}
    for r in requests:
        assert r.attributes["hasher.batch.id"] == batch.attributes["hasher.batch.id"]
        assert r.attributes["hasher.batch.size"] == 2
    waits = [s for s in exporter.get_finished_spans() if s.name == "queue_wait"]
    assert sorted(w.parent.span_id for w in waits) == sorted(r.context.span_id for r in requests)
    registry = metrics.registry
    assert registry.get_sample_value("servestack_hasher_batch_size_count") == 1
    assert registry.get_sample_value("servestack_hasher_batch_size_sum") == 2
    assert registry.get_sample_value("servestack_hasher_queue_wait_seconds_count") == 2
    assert registry.get_sample_value("servestack_hasher_queue_depth") == 0
