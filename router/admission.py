"""Admission control: a bounded amount of work in flight per backend; the rest refused at once.

Each backend admits a limit of calls in flight. A call beyond it waits at most ``max_wait_s`` (a
few milliseconds: long enough to take a slot that is about to be freed, far too short to build a
queue) in FIFO order, then is refused with 503 ``overloaded`` and Retry-After. Work beyond capacity
is thus turned away in milliseconds instead of queueing in the router or the pods until every
request, old and new, misses its deadline: goodput holds at capacity and the refused clients know
at once to come back later.

The limit adapts, in the manner of Envoy's adaptive concurrency filter (a gradient on latency):
every ``interval`` (or ``samples`` calls) the mean duration of the calls just finished is compared
with the backend's minimum (over two rotating windows of ``min_rtt_window_s``) plus a tolerance,

    gradient = clamp(target / mean, 0.5, 2.0),  target = max(tolerance * min, min + floor)
    limit    = clamp(limit * gradient + sqrt(limit), lo, hi)

so the limit grows while calls take about as long as on an idle pod and shrinks as soon as they
queue. (A pod slowed for longer than two windows, by load the limit does not see, becomes the
new minimum: the limit then holds that latency rather than the idle one.) ``floor`` keeps a few
tens of milliseconds of noise (the router's own event loop) from reading as queueing at a pod
that answers in one. Bounds and the start scale with the backend's
available replicas: a pod killed or ejected halves its backend's bounds at once. A fixed limit
(``adaptive=False``) is ``limit_per_replica`` per replica; ``limit_per_replica`` 0 turns admission
control off (the A/B in bench/bench_overload.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from router.errors import Unavailable


class Overloaded(Unavailable):
    """The backend has as much work in flight as it may: 503 ``overloaded``, Retry-After."""

    code = "overloaded"


class _Gate:
    """In-flight count, FIFO waiters and the adaptive limit of one backend."""

    def __init__(self, limit: float, now: float) -> None:
        self.inflight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.limit = limit
        self.sum_s = 0.0
        self.count = 0
        self.window_started = now
        self.min_now = math.inf
        self.min_before = math.inf
        self.min_rotated = now

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
                 adaptive: bool = True, min_per_replica: int = 4, max_per_replica: int = 64,
                 tolerance: float = 2.0, floor_s: float = 0.05, interval_s: float = 0.25, samples: int = 50,
                 min_rtt_window_s: float = 30.0, retry_after_s: int = 1,
                 on_refused: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.limit_per_replica = limit_per_replica
        self.max_wait_s = max_wait_s
        self._replicas = replicas
        self.adaptive = adaptive
        self.min_per_replica, self.max_per_replica = min_per_replica, max_per_replica
        self.tolerance, self.floor_s = tolerance, floor_s
        self.interval_s, self.samples, self.min_rtt_window_s = interval_s, samples, min_rtt_window_s
        self.retry_after_s = retry_after_s
        self._on_refused = on_refused or (lambda _backend: None)
        self._clock = clock
        self._gates: dict[str, _Gate] = {}

    def _bounds(self, backend: str) -> tuple[float, float]:
        n = max(1, self._replicas(backend))
        return self.min_per_replica * n, self.max_per_replica * n

    def limit(self, backend: str) -> int:
        n = max(1, self._replicas(backend))
        gate = self._gates.get(backend)
        if not self.adaptive or gate is None:
            return self.limit_per_replica * n
        lo, hi = self._bounds(backend)
        return int(min(hi, max(lo, gate.limit)))

    def observe(self, backend: str, duration_s: float) -> None:
        """One call of ``backend`` took ``duration_s``: update its adaptive limit (see the module doc).

        The caller reports answered calls and timeouts, not fast failures: a refused connection
        taking a millisecond would pass for the pod's minimum and every real answer for queueing.
        """
        gate = self._gates.get(backend)
        if not self.adaptive or gate is None:
            return
        now = self._clock()
        gate.sum_s += duration_s
        gate.count += 1
        gate.min_now = min(gate.min_now, duration_s)
        if now - gate.min_rotated >= self.min_rtt_window_s:
            gate.min_before, gate.min_now, gate.min_rotated = gate.min_now, math.inf, now
        if gate.count < self.samples and now - gate.window_started < self.interval_s:
            return
        mean = gate.sum_s / gate.count
        least = min(gate.min_now, gate.min_before)
        target = max(self.tolerance * least, least + self.floor_s)
        gradient = min(2.0, max(0.5, target / mean)) if mean > 0 else 2.0
        lo, hi = self._bounds(backend)
        gate.limit = min(hi, max(lo, gate.limit * gradient + math.sqrt(gate.limit)))
        gate.sum_s, gate.count, gate.window_started = 0.0, 0, now

    def inflight(self, backend: str) -> int:
        gate = self._gates.get(backend)
        return gate.inflight if gate else 0

    @contextlib.asynccontextmanager
    async def slot(self, backend: str) -> AsyncIterator[None]:
        """Hold one of ``backend``'s slots for the body; :class:`Overloaded` when none frees in time."""
        if self.limit_per_replica <= 0:
            yield
            return
        gate = self._gates.get(backend)
        if gate is None:
            gate = self._gates[backend] = _Gate(self.limit_per_replica * max(1, self._replicas(backend)),
                                                self._clock())
        if gate.inflight < self.limit(backend) and not gate.waiters:
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
