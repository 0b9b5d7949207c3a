"""Load shapes: users and spawn rate over time, from environment variables, through tick().

The Locust shape classes are exercised in a subprocess: importing Locust monkey-patches the
whole process with gevent, which the rest of the test session must not inherit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from load_tests.plans import SoakPlan, SpikePlan, StepPlan


def _env(**values: object) -> dict[str, str]:
    return {f"SERVESTACK_SHAPE_{k.upper()}": str(v) for k, v in values.items()}


def test_step_plan_climbs_in_equal_steps_then_stops() -> None:
    plan = StepPlan.from_env(_env(users=50, duration_s=100, spawn_rate=5, steps=5))
    assert [plan.users_at(t) for t in (0, 19.9, 20, 45, 60, 99.9)] == [
        (10, 5.0), (10, 5.0), (20, 5.0), (30, 5.0), (40, 5.0), (50, 5.0)]
    assert plan.users_at(100) is None


def test_step_plan_rounds_up_so_the_last_step_is_the_peak() -> None:
    plan = StepPlan.from_env(_env(users=7, duration_s=30, steps=3))
    assert [plan.users_at(t)[0] for t in (0, 10, 20)] == [3, 5, 7]  # type: ignore[index]


def test_spike_plan_jumps_at_once_and_returns_to_base() -> None:
    plan = SpikePlan.from_env(_env(users=60, duration_s=90, spawn_rate=2))
    # Defaults: base users // 5 = 12, spike from 30 s for 15 s.
    assert plan.users_at(0) == (12, 60.0)
    assert plan.users_at(29.9) == (12, 60.0)
    assert plan.users_at(30) == (60, 60.0)
    assert plan.users_at(44.9) == (60, 60.0)
    assert plan.users_at(45) == (12, 60.0)
    assert plan.users_at(90) is None


def test_spike_must_fit_in_the_run() -> None:
    with pytest.raises(ValueError, match="spike must fit"):
        SpikePlan.from_env(_env(users=10, duration_s=60, spike_at_s=50, spike_s=20))
    with pytest.raises(ValueError, match="spike must fit"):
        SpikePlan.from_env(_env(users=10, base_users=20))


def test_soak_ramps_to_the_peak_over_the_ramp_then_holds() -> None:
    plan = SoakPlan.from_env(_env(users=40, duration_s=3600, ramp_s=80))
    assert plan.users_at(0) == (40, 0.5)  # Locust reaches 40 users after 80 s at 0.5/s
    assert plan.users_at(3599) == (40, 0.5)
    assert plan.users_at(3600) is None
    assert SoakPlan.from_env(_env(users=10, duration_s=300)).ramp_s == 30  # default duration / 10


def test_bad_settings_fail_at_start() -> None:
    with pytest.raises(ValueError):
        StepPlan.from_env(_env(users=0))
    with pytest.raises(ValueError):
        StepPlan.from_env(_env(steps=0))
    with pytest.raises(ValueError):
        SoakPlan.from_env(_env(duration_s=10, ramp_s=10))
    with pytest.raises(ValueError):
        StepPlan.from_env(_env(duration_s=-1))


_TICKS = """
import json, sys
from load_tests.shapes import Soak, Spike, StepLoad
out = {}
for cls in (StepLoad, Spike, Soak):
    shape = cls()
    ticks = []
    for t in (5.0, 25.0, 40.0):
        shape.get_run_time = lambda t=t: t
        ticks.append(shape.tick())
    out[cls.__name__] = ticks
print(json.dumps(out))
"""


def test_tick_follows_the_run_time() -> None:
    env = {**os.environ, **_env(users=4, duration_s=40, spawn_rate=4, steps=2, spike_at_s=20, spike_s=10, ramp_s=4)}
    proc = subprocess.run([sys.executable, "-c", _TICKS], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    ticks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ticks == {
        "StepLoad": [[2, 4.0], [4, 4.0], None],
        "Spike": [[1, 4.0], [4, 4.0], None],
        "Soak": [[4, 1.0], [4, 1.0], None],
    }
