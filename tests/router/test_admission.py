"""Admission control per backend and the request deadline (router.admission, router.deadline)."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.admission import Admission, Overloaded
from router.deadline import (
    DeadlineExceeded,
    DeadlineMiddleware,
    InvalidTimeout,
    check_time_for,
    parse_timeout_ms,
    set_deadline,
    time_left,
)


def admission(limit: int, wait_s: float = 0.005, replicas: int = 1, refused: list | None = None) -> Admission:
    """A fixed limit (the adaptive one is tested on its own below)."""
    return Admission(limit, wait_s, lambda _b: replicas, adaptive=False,
                     on_refused=(refused.append if refused is not None else None))


async def hold(adm: Admission, backend: str, release: asyncio.Event, entered: list) -> None:
    async with adm.slot(backend):
        entered.append(backend)
        await release.wait()


async def test_beyond_the_limit_a_call_is_refused_within_its_short_wait() -> None:
    refused: list[str] = []
    adm = admission(2, wait_s=0.01, refused=refused)
    release, entered = asyncio.Event(), []
    holders = [asyncio.create_task(hold(adm, "b", release, entered)) for _ in range(2)]
    await asyncio.sleep(0)
    assert entered == ["b", "b"] and adm.inflight("b") == 2
    t0 = time.monotonic()
    with pytest.raises(Overloaded) as info:
        async with adm.slot("b"):
            pytest.fail("admitted beyond the limit")
    assert time.monotonic() - t0 < 0.05
    assert info.value.status == 503 and info.value.code == "overloaded" and info.value.headers() == {"Retry-After": "1"}
    assert refused == ["b"]
    async with adm.slot("other"):  # limits are per backend
        assert adm.inflight("other") == 1
    release.set()
    await asyncio.gather(*holders)
    assert adm.inflight("b") == 0


async def test_a_slot_freed_during_the_wait_goes_to_the_waiter_in_order() -> None:
    adm = admission(1, wait_s=1.0)
    release, entered = asyncio.Event(), []
    first = asyncio.create_task(hold(adm, "b", release, entered))
    await asyncio.sleep(0)
    order: list[int] = []

    async def wait_then_enter(i: int) -> None:
        async with adm.slot("b"):
            order.append(i)

    waiters = [asyncio.create_task(wait_then_enter(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert order == []
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == [0, 1, 2] and adm.inflight("b") == 0


async def test_limit_scales_with_available_replicas_and_zero_turns_it_off() -> None:
    assert admission(4, replicas=3).limit("b") == 12
    assert admission(4, replicas=0).limit("b") == 4  # a backend with none is still tried (fallback, 503)
    off = admission(0)
    async with off.slot("b"), off.slot("b"), off.slot("b"):
        assert off.inflight("b") == 0


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    adm = admission(1, wait_s=1.0)
    release, entered = asyncio.Event(), []
    first = asyncio.create_task(hold(adm, "b", release, entered))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold(adm, "b", asyncio.Event(), entered))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await first
    assert adm.inflight("b") == 0
    async with adm.slot("b"):
        assert adm.inflight("b") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def feed(adm: Admission, clock: Clock, durations: list[float]) -> None:
    """Calls that take ``durations``, finishing as if 20 ran at once (the clock advances d / 20 per call)."""
    for d in durations:
        async with adm.slot("b"):
            clock.now += d / 20
            adm.observe("b", d)


async def test_adaptive_limit_grows_while_calls_stay_fast_and_shrinks_when_they_queue() -> None:
    clock = Clock()
    replicas = [2]
    adm = Admission(4, 0.005, lambda _b: replicas[0], min_per_replica=2, max_per_replica=32, tolerance=2.0,
                    floor_s=0.05, interval_s=0.25, samples=10, clock=clock)
    async with adm.slot("b"):
        assert adm.limit("b") == 8  # the start: 4 per replica
    await feed(adm, clock, [0.1] * 200)  # as fast as ever: grows to the bound
    assert adm.limit("b") == 64
    await feed(adm, clock, [0.5] * 200)  # five times the minimum, far past the floor: queueing
    assert adm.limit("b") == 4  # down to the lower bound, 2 per replica
    await feed(adm, clock, [0.12] * 200)  # within the tolerance again
    assert adm.limit("b") > 32
    replicas[0] = 1  # a replica gone: the bounds halve at once
    assert adm.limit("b") == 32


async def test_adaptive_limit_ignores_noise_below_the_floor() -> None:
    clock = Clock()
    adm = Admission(4, 0.005, lambda _b: 1, max_per_replica=16, floor_s=0.05, samples=10, clock=clock)
    await feed(adm, clock, [0.002] * 20 + [0.03] * 200)  # 15x the minimum, but 30 ms: router noise
    assert adm.limit("b") == 16


def test_timeout_header_parsing() -> None:
    assert parse_timeout_ms(None, 2.0, 30.0) == 2.0
    assert parse_timeout_ms("250", 2.0, 30.0) == 0.25
    assert parse_timeout_ms("600000", 2.0, 30.0) == 30.0  # capped
    for bad in ("soon", "1.5", "0", "-5"):
        with pytest.raises(InvalidTimeout) as info:
            parse_timeout_ms(bad, 2.0, 30.0)
        assert info.value.status == 400 and info.value.code == "invalid_timeout"


async def test_deadline_follows_the_request_into_its_tasks() -> None:
    assert time_left() is None and check_time_for("x", 1.0) is None
    set_deadline(0.5)

    async def child() -> float | None:
        return time_left()

    left = await asyncio.create_task(child())
    assert left is not None and 0.4 < left <= 0.5
    assert check_time_for("hash", 0.1) == pytest.approx(left, abs=0.05)
    with pytest.raises(DeadlineExceeded) as info:
        check_time_for("hash", 1.0)
    assert info.value.status == 504 and info.value.code == "deadline_exceeded"


async def test_middleware_sets_the_deadline_and_refuses_a_bad_header() -> None:
    seen: list[float | None] = []

    async def app(scope, receive, send) -> None:
        seen.append(time_left())

    mw = DeadlineMiddleware(app, frozenset({"/v1/verify"}), default_s=2.0, max_s=30.0)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    def scope(path: str, headers: list) -> dict:
        return {"type": "http", "path": path, "headers": headers}

    await mw(scope("/v1/verify", [(b"x-request-timeout-ms", b"300")]), None, send)
    await mw(scope("/v1/verify", []), None, send)
    await mw(scope("/metrics", [(b"x-request-timeout-ms", b"300")]), None, send)
    assert 0.25 < seen[0] <= 0.3 and 1.9 < seen[1] <= 2.0 and seen[2] is None
    await mw(scope("/v1/verify", [(b"x-request-timeout-ms", b"later")]), None, send)
    assert len(seen) == 3 and sent[0]["status"] == 400 and b"invalid_timeout" in sent[1]["body"]
