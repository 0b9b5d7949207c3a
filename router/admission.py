"""Admission control: a bounded amount of work in flight per backend; the rest refused at once.

Each backend admits ``limit_per_replica`` calls per available replica. A call beyond that waits
at most ``max_wait_s`` (a few milliseconds: long enough to take a slot that is about to be freed,
far too short to build a queue) in FIFO order, then is refused with 503 ``overloaded`` and
Retry-After. Work beyond capacity is thus turned away in milliseconds instead of queueing in the
router or the pods until every request, old and new, misses its deadline: goodput holds at
capacity and the refused clients know at once to come back later.

A fixed limit, sized from the pods' capacity: at the limit a pod's dynamic batcher already runs
full batches back to back, so more concurrency only adds queueing delay. ``limit_per_replica``
0 turns admission control off (the A/B in bench/bench_overload.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from router.errors import Unavailable


class Overloaded(Unavailable):
    """The backend has as much work in flight as it may: 503 ``overloaded``, Retry-After."""

    code = "overloaded"


class _Gate:
    """In-flight count and FIFO waiters of one backend."""

    def __init__(self) -> None:
        self.inflight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def release(self, limit: int) -> None:
        self.inflight -= 1
        while self.waiters and self.inflight < limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                self.inflight += 1


class Admission:
    """Per-backend concurrency limits.

    Args:
        limit_per_replica: calls in flight allowed per available replica; 0: no limit.
        max_wait_s: longest wait for a slot before the call is refused.
        replicas: backend -> number of its available replicas (at least 1 is assumed).
        retry_after_s: the Retry-After of a refusal.
        on_refused: called with the backend of each refusal (a metric).
    """

    def __init__(self, limit_per_replica: int, max_wait_s: float, replicas: Callable[[str], int], *,
                 retry_after_s: int = 1, on_refused: Callable[[str], None] | None = None) -> None:
        self.limit_per_replica = limit_per_replica
        self.max_wait_s = max_wait_s
        self._replicas = replicas
        self.retry_after_s = retry_after_s
        self._on_refused = on_refused or (lambda _backend: None)
        self._gates: dict[str, _Gate] = {}

    def limit(self, backend: str) -> int:
        return self.limit_per_replica * max(1, self._replicas(backend))

    def inflight(self, backend: str) -> int:
        gate = self._gates.get(backend)
        return gate.inflight if gate else 0

    @contextlib.asynccontextmanager
    async def slot(self, backend: str) -> AsyncIterator[None]:
        """Hold one of ``backend``'s slots for the body; :class:`Overloaded` when none frees in time."""
        if self.limit_per_replica <= 0:
            yield
            return
        gate = self._gates.setdefault(backend, _Gate())
        limit = self.limit(backend)
        if gate.inflight < limit and not gate.waiters:
            gate.inflight += 1
        else:
            await self._wait(backend, gate)
        try:
            yield
        finally:
            gate.release(self.limit(backend))

    async def _wait(self, backend: str, gate: _Gate) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait_s)
        except TimeoutError:
            if waiter.done():  # the slot arrived as the wait ran out: take it
                return
            waiter.cancel()
            with contextlib.suppress(ValueError):
                gate.waiters.remove(waiter)
            self._on_refused(backend)
            raise Overloaded(f"{backend}: {gate.inflight} calls in flight, the most it admits "
                             f"({self.limit(backend)}); retry later", retry_after_s=self.retry_after_s) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                gate.release(self.limit(backend))  # granted, but our caller is gone: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    gate.waiters.remove(waiter)
            raise
