"""Plans of the named load shapes: users and spawn rate as a pure function of the run time.

`users_at(t) -> (users, spawn_rate) | None` (None ends the test); load_tests/shapes.py wraps each
plan in a Locust `LoadTestShape`. Kept apart from Locust so that importing a plan does not
monkey-patch the process with gevent (Locust's import does). Settings come from environment
variables; `servestack loadtest --shape NAME --users N --duration D` sets them.

| variable | used by | default |
| --- | --- | --- |
| `SERVESTACK_SHAPE_USERS` | all: peak users | 50 |
| `SERVESTACK_SHAPE_DURATION_S` | all: total run time | 300 |
| `SERVESTACK_SHAPE_SPAWN_RATE` | all: users started per second when ramping | 10 |
| `SERVESTACK_SHAPE_STEPS` | StepLoad: number of equal steps up to the peak | 5 |
| `SERVESTACK_SHAPE_BASE_USERS` | Spike: users before and after the spike | USERS // 5 (>= 1) |
| `SERVESTACK_SHAPE_SPIKE_AT_S` | Spike: when the spike starts | DURATION / 3 |
| `SERVESTACK_SHAPE_SPIKE_S` | Spike: how long it lasts | DURATION / 6 |
| `SERVESTACK_SHAPE_RAMP_S` | Soak: ramp-up time before the plateau | min(60, DURATION / 10) |

Why these three: a step load finds the knee of the latency curve and gives an HPA a staircase to
follow; a spike checks admission control (429/503 with Retry-After, not timeouts) and how fast
the autoscaler reacts; a soak at a constant rate finds leaks and slow drifts (audit DB growth,
cache churn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

ENV_PREFIX = "SERVESTACK_SHAPE_"
Tick = tuple[int, float] | None


def _num(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(ENV_PREFIX + name)
    value = default if raw in (None, "") else float(raw)
    if value < 0 or math.isnan(value):
        raise ValueError(f"{ENV_PREFIX}{name} must be >= 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Common:
    users: int = 50
    duration_s: float = 300.0
    spawn_rate: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Common:
        common = cls(int(_num(env, "USERS", 50)), _num(env, "DURATION_S", 300.0), _num(env, "SPAWN_RATE", 10.0))
        if common.users < 1 or common.duration_s <= 0 or common.spawn_rate <= 0:
            raise ValueError(f"shape needs users >= 1, duration > 0, spawn rate > 0: {common}")
        return common


@dataclass(frozen=True)
class StepPlan:
    """`steps` equal steps of users//steps (the last reaches the peak), each duration/steps long."""

    common: Common
    steps: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StepPlan:
        steps = int(_num(env, "STEPS", 5))
        if steps < 1:
            raise ValueError(f"{ENV_PREFIX}STEPS must be >= 1")
        return cls(Common.from_env(env), steps)

    def users_at(self, t: float) -> Tick:
        c = self.common
        if t >= c.duration_s:
            return None
        step = min(int(t / (c.duration_s / self.steps)), self.steps - 1)
        return max(1, math.ceil(c.users * (step + 1) / self.steps)), c.spawn_rate


@dataclass(frozen=True)
class SpikePlan:
    """Base load, a jump to the peak (started as fast as Locust can), then back to base."""

    common: Common
    base_users: int
    spike_at_s: float
    spike_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SpikePlan:
        c = Common.from_env(env)
        plan = cls(c, int(_num(env, "BASE_USERS", max(1, c.users // 5))),
                   _num(env, "SPIKE_AT_S", c.duration_s / 3), _num(env, "SPIKE_S", c.duration_s / 6))
        if plan.base_users > c.users or plan.spike_at_s + plan.spike_s > c.duration_s:
            raise ValueError(f"spike must fit: base <= peak users and spike end <= duration ({plan})")
        return plan

    def users_at(self, t: float) -> Tick:
        c = self.common
        if t >= c.duration_s:
            return None
        if self.spike_at_s <= t < self.spike_at_s + self.spike_s:
            # The point of a spike is that it is sudden: start all of it within a second.
            return c.users, float(max(c.spawn_rate, c.users))
        return self.base_users, float(max(c.spawn_rate, c.users))


@dataclass(frozen=True)
class SoakPlan:
    """Ramp to the peak over ramp_s, then hold it until the end."""

    common: Common
    ramp_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SoakPlan:
        c = Common.from_env(env)
        plan = cls(c, _num(env, "RAMP_S", min(60.0, c.duration_s / 10)))
        if plan.ramp_s >= c.duration_s:
            raise ValueError(f"soak ramp ({plan.ramp_s} s) must be shorter than the duration ({c.duration_s} s)")
        return plan

    def users_at(self, t: float) -> Tick:
        c = self.common
        if t >= c.duration_s:
            return None
        # Spawn rate that reaches the peak exactly at the end of the ramp (Locust ramps linearly).
        rate = c.users / self.ramp_s if self.ramp_s > 0 else float(c.users)
        return c.users, rate
