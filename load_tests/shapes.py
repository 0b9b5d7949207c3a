"""Named Locust load shapes (StepLoad, Spike, Soak) for reproducible autoscaling runs.

Each wraps a pure plan from load_tests/plans.py (settings and semantics documented there); the
plan reads its environment variables when Locust instantiates the shape, i.e. when it loads the
locustfile, so a bad setting fails the run at start.
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from load_tests.plans import SoakPlan, SpikePlan, StepPlan, Tick


class StepLoad(LoadTestShape):
    """Staircase to SERVESTACK_SHAPE_USERS in SERVESTACK_SHAPE_STEPS steps."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = StepPlan.from_env(os.environ)

    def tick(self) -> Tick:
        return self.plan.users_at(self.get_run_time())


class Spike(LoadTestShape):
    """Base load with one sudden spike to SERVESTACK_SHAPE_USERS."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = SpikePlan.from_env(os.environ)

    def tick(self) -> Tick:
        return self.plan.users_at(self.get_run_time())


class Soak(LoadTestShape):
    """Ramp, then a long constant plateau at SERVESTACK_SHAPE_USERS."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = SoakPlan.from_env(os.environ)

    def tick(self) -> Tick:
        return self.plan.users_at(self.get_run_time())

