"""traced(): context manager and decorator, errors, links, and concurrent reuse of one instance.

Captured with the SDK's in-memory exporter: these are span-shape rules of our helper, and the
wire path is covered by the OTLP tests.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from tracing import Telemetry, TracingSettings, inject_headers, setup_telemetry, traced
from tracing.propagation import extract_context


@pytest.fixture
def captured() -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tel = setup_telemetry("svc", "1", TracingSettings())
    tel.add_span_processor(SimpleSpanProcessor(exporter))
    return tel, exporter


def test_context_manager_nests_under_the_current_span(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tel, exporter = captured
    with traced(tel.tracer, "outer") as outer, traced(tel.tracer, "inner", {"servestack.batch_size": 4}) as inner:
        assert inner.get_span_context().trace_id == outer.get_span_context().trace_id
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert dict(spans["inner"].attributes) == {"servestack.batch_size": 4}


async def test_decorator_sync_and_async(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tel, exporter = captured

    @traced(tel.tracer, "decode")
    def decode(x: int) -> int:
        return x + 1

    @traced(tel.tracer, "engine", kind=SpanKind.CLIENT)
    async def engine(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert decode(1) == 2 and await engine(3) == 6
    assert decode.__name__ == "decode" and asyncio.iscoroutinefunction(engine)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["engine"].kind is SpanKind.CLIENT and spans["decode"].kind is SpanKind.INTERNAL


def test_exception_is_recorded_and_reraised(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tel, exporter = captured
    with pytest.raises(ValueError, match="bad image"), traced(tel.tracer, "decode"):
        raise ValueError("bad image")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"] == "ValueError"


def test_links_reach_the_span(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tel, exporter = captured
    with traced(tel.tracer, "request a") as a, traced(tel.tracer, "request b") as b:
        pass
    links = [Link(a.get_span_context()), Link(b.get_span_context(), {"servestack.batch_index": 1})]
    with traced(tel.tracer, "batch", {"servestack.batch_size": 2}, links=links):
        pass
    batch = next(s for s in exporter.get_finished_spans() if s.name == "batch")
    assert [ln.context.span_id for ln in batch.links] == [a.get_span_context().span_id, b.get_span_context().span_id]
    assert dict(batch.links[1].attributes) == {"servestack.batch_index": 1}


async def test_one_instance_entered_by_concurrent_tasks(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    """Regression: the open span lived on the instance, so interleaved tasks closed each other's spans."""
    tel, exporter = captured
    step = traced(tel.tracer, "queue wait")
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        with traced(tel.tracer, "request 1"), step:
            entered.set()
            await release.wait()

    resumed: list[int] = []

    async def second() -> None:
        await entered.wait()
        with traced(tel.tracer, "request 2"), step:
            release.set()
            await asyncio.sleep(0)  # task 1 leaves `step` now, while task 2 is still inside it
            resumed.append(time.time_ns())

    await asyncio.gather(first(), second())
    spans = exporter.get_finished_spans()
    parents = {s.context.span_id: s.name for s in spans}
    waits = [s for s in spans if s.name == "queue wait"]
    assert sorted(parents[w.parent.span_id] for w in waits) == ["request 1", "request 2"]
    # Each wait ended inside its own request (the old code ended request 2's span from task 1).
    by_name = {s.name: s for s in spans if s.name != "queue wait"}
    for w in waits:
        owner = by_name[parents[w.parent.span_id]]
        assert owner.start_time <= w.start_time <= w.end_time <= owner.end_time
    wait_2 = next(w for w in waits if parents[w.parent.span_id] == "request 2")
    assert wait_2.end_time >= resumed[0], "task 1's exit ended task 2's span"


async def test_a_task_with_stacked_entries_keeps_stacking_after_the_first_holder_leaves(
        captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    """Task 2 enters while task 1 holds the instance, task 1 leaves, task 2 enters again: its
    inner exit must end the inner span, not the outer one."""
    tel, exporter = captured
    step = traced(tel.tracer, "step")
    one_in, two_in, one_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        with step:
            one_in.set()
            await two_in.wait()
        one_out.set()

    async def second() -> None:
        await one_in.wait()
        with step as outer:
            two_in.set()
            await one_out.wait()
            with step as inner:
                pass
            assert not inner.is_recording() and outer.is_recording()
        assert not outer.is_recording()

    await asyncio.gather(first(), second())
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    inner = next(s for s in spans if s.parent is not None)
    outer = next(s for s in spans if s.context.span_id == inner.parent.span_id)
    assert outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time


def test_recursion_through_one_instance(captured: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tel, exporter = captured
    step = traced(tel.tracer, "step")
    with step as outer, step as inner:
        assert inner.get_span_context().span_id != outer.get_span_context().span_id
    first, second = exporter.get_finished_spans()  # inner ends first
    assert first.parent.span_id == second.context.span_id and second.parent is None


def test_unsampled_traces_start_no_child_spans_and_propagate_the_parent() -> None:
    exporter = InMemorySpanExporter()
    tel = setup_telemetry("svc", "1", TracingSettings(sample_ratio=0.0))
    tel.add_span_processor(SimpleSpanProcessor(exporter))
    with tel.tracer.start_as_current_span("request") as root:
        assert not root.get_span_context().trace_flags.sampled
        with traced(tel.tracer, "step", {"k": 1}) as step:
            assert step is root  # the stand-in: no span object is created for an unsampled child
            carrier = inject_headers({})
        with pytest.raises(ValueError), traced(tel.tracer, "failing"):
            raise ValueError("still raised")
    ctx = root.get_span_context()
    # Downstream pods see the same trace, not sampled, so they do not sample either.
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(flags, 16) & 0x01 == 0  # not sampled (0x02 is W3C's random-trace-id flag)
    assert exporter.get_finished_spans() == ()


def test_sampled_children_still_get_their_own_spans_under_a_sampled_remote_parent() -> None:
    exporter = InMemorySpanExporter()
    tel = setup_telemetry("svc", "1", TracingSettings(sample_ratio=0.0))  # the parent's decision wins
    tel.add_span_processor(SimpleSpanProcessor(exporter))
    parent = extract_context({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
    with tel.tracer.start_as_current_span("request", context=parent), traced(tel.tracer, "step") as step:
        assert step.is_recording()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["request", "step"]
