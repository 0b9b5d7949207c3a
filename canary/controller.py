"""The canary controller: thin I/O around :meth:`CanaryAnalysis.evaluate`.

Each interval: read the canary's metrics from the source, let the pure analysis decide, persist
the new state (before actuating: a crash in between is healed on resume, which re-applies the
persisted weights), write the weights, log the step as an event, export it as metrics.

The state file is re-read before every step, so an operator's ``abort`` or ``promote`` from
another process wins over a controller that is sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx

from canary.actuators import WeightActuator
from canary.analysis import CanaryAnalysis, Decision, MetricsSnapshot, manual, new_state
from canary.metrics import CanaryMetrics
from canary.sources import MetricSource
from canary.sources.prometheus import PrometheusError
from canary.state import CanaryEvent, CanaryState, EventKind, StateStore

log = logging.getLogger(__name__)

OnEvent = Callable[[CanaryState, CanaryEvent, Decision | None], None]
# What a source may raise when it cannot measure: a failed check, not a crash.
MEASUREMENT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, PrometheusError)


class CanaryConflict(RuntimeError):
    """Another canary (other arms) is in progress on the route."""


def _kind(decision: Decision, before: CanaryState) -> EventKind:
    if decision.action == "advance" and before.phase == "initializing":
        return "start"
    if decision.action == "hold" and decision.state.failed_checks > before.failed_checks:
        return "halt"
    return decision.action


class CanaryController:
    def __init__(
        self,
        analysis: CanaryAnalysis,
        source: MetricSource,
        actuator: WeightActuator,
        store: StateStore,
        *,
        metrics: CanaryMetrics | None = None,
        on_event: OnEvent | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.analysis = analysis
        self.source = source
        self.actuator = actuator
        self.store = store
        self.metrics = metrics or CanaryMetrics()
        self._on_event = on_event or (lambda _s, _e, _d: None)
        self._clock = clock
        self._sleep = sleep

    def _record(self, state: CanaryState, kind: EventKind, reason: str, decision: Decision | None) -> CanaryState:
        event = CanaryEvent(at=self._clock(), kind=kind, reason=reason, canary_weight=state.canary_weight,
                            failed_checks=state.failed_checks)
        state = state.with_event(event)
        self.store.save(state)
        self.metrics.observe(state, kind, decision.checks if decision else None)
        log.info("canary %s [%s] %s", state.route, kind, reason)
        self._on_event(state, event, decision)
        return state

    async def _apply(self, decision: Decision, before: CanaryState) -> CanaryState:
        state = self._record(decision.state, _kind(decision, before), decision.reason, decision)
        if decision.weights is not None:
            await self.actuator.set_weights(state.route, decision.weights)
        return state

    async def begin(self, route: str, stable_arm: str, canary_arm: str, canary_backend: str | None = None,
                    ) -> CanaryState:
        """Start a canary, or resume the one persisted for ``route`` if it is still running."""
        existing = self.store.load(route)
        if existing is not None and not existing.terminal:
            if (existing.stable_arm, existing.canary_arm) != (stable_arm, canary_arm):
                raise CanaryConflict(
                    f"route {route!r} has a canary {existing.stable_arm} -> {existing.canary_arm} in progress; "
                    f"abort it first")
            state = existing
            if state.phase == "progressing":
                await self.actuator.set_weights(route, state.weights())
            state = self._record(state, "resume", f"resume at {state.canary_arm} weight "
                                 f"{state.canary_weight:g} % after {state.iterations} intervals", None)
        else:
            fresh = new_state(route, stable_arm, canary_arm, canary_backend).model_copy(
                update={"started_at": self._clock()})
            empty = MetricsSnapshot(window_s=0.0, requests=0.0, errors=0.0)
            state = await self._apply(self.analysis.evaluate(empty, fresh), fresh)
        await self.source.mark()
        return state

    async def step(self, state: CanaryState) -> Decision:
        """Judge the interval that just ended and act on it."""
        try:
            snapshot = await self.source.snapshot(state.route, state.canary_arm, self.analysis.interval_s,
                                                  state.canary_backend)
        except MEASUREMENT_ERRORS as exc:
            decision = self.analysis.unmeasured(state, f"{type(exc).__name__}: {exc}")
        else:
            decision = self.analysis.evaluate(snapshot, state)
        applied = await self._apply(decision, state)
        if not applied.terminal:
            await self.source.mark()
        return decision.model_copy(update={"state": applied})

    async def run(self, route: str, stable_arm: str, canary_arm: str, *, canary_backend: str | None = None,
                  max_intervals: int | None = None,
                  after_begin: Callable[[CanaryState], Awaitable[None]] | None = None) -> CanaryState:
        """Drive the canary until it is promoted or rolled back (or ``max_intervals`` pass).

        ``after_begin`` runs once the first weights are in force (the CLI starts its load then, so
        that subjects enrolled by it get templates on the canary arm too).
        """
        state = await self.begin(route, stable_arm, canary_arm, canary_backend)
        if after_begin is not None:
            await after_begin(state)
            await self.source.mark()  # the enrolment is not part of the first interval
        intervals = 0
        while not state.terminal and (max_intervals is None or intervals < max_intervals):
            await self._sleep(self.analysis.interval_s)
            on_disk = self.store.load(route)
            if on_disk is not None and on_disk.terminal:
                log.info("canary %s ended outside this controller: %s", route, on_disk.last_reason)
                return on_disk
            state = (await self.step(state)).state
            intervals += 1
        return state

    async def operator(self, route: str, action: Literal["promote", "rollback"], reason: str) -> CanaryState:
        """``servestack canary promote|abort``: end the persisted canary now."""
        state = self.store.load(route)
        if state is None:
            raise LookupError(f"no canary for route {route!r}")
        if state.terminal:
            raise CanaryConflict(f"the canary on {route!r} already {state.phase}: {state.last_reason}")
        decision = manual(state, action, reason)
        applied = self._record(decision.state, "promote" if action == "promote" else "abort", reason, decision)
        await self.actuator.set_weights(route, applied.weights())
        return applied
