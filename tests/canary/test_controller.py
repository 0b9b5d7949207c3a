"""The controller loop around the pure analysis: actuation order, persistence, resume, abort.

The source and actuator are in-memory fakes here (the real ones have their own tests); the
state file, the metrics registry and the analysis are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from canary.analysis import CanaryAnalysis, MetricsSnapshot
from canary.controller import CanaryConflict, CanaryController
from canary.state import StateStore

POLICY = CanaryAnalysis.model_validate({
    "interval_s": 5, "threshold": 2, "max_weight": 100, "step_weight": 25, "min_requests": 10,
    "metrics": [{"name": "error-rate", "threshold_range": {"max": 1}},
                {"name": "request-duration", "threshold_range": {"max": 150}}],
})


class ScriptedSource:
    """Snapshots from a script; the error rate follows the weight the actuator last set."""

    def __init__(self, actuator: RecordingActuator, error_rate: float = 0.0, fail_calls: int = 0) -> None:
        self.actuator = actuator
        self.error_rate = error_rate
        self.marks = 0
        self.fail_calls = fail_calls

    async def mark(self) -> None:
        self.marks += 1

    async def snapshot(self, route: str, canary_arm: str, window_s: float,
                       canary_backend: str | None = None) -> MetricsSnapshot:
        if self.fail_calls:
            self.fail_calls -= 1
            raise httpx.ConnectError("connection refused")
        requests = self.actuator.weights[canary_arm] * 2  # traffic follows the weight
        return MetricsSnapshot(window_s=window_s, requests=requests, errors=requests * self.error_rate, p99_ms=30)


class RecordingActuator:
    def __init__(self) -> None:
        self.weights: dict[str, float] = {"v1": 100.0, "v2": 0.0}
        self.history: list[dict[str, float]] = []

    async def set_weights(self, route: str, weights: Mapping[str, float]) -> None:
        self.weights.update(weights)
        self.history.append(dict(weights))

    async def get_weights(self, route: str) -> dict[str, float]:
        return dict(self.weights)

    async def get_backends(self, route: str) -> dict[str, str]:
        return {"v1": "hasher-face-v1", "v2": "hasher-face-v2"}


async def no_sleep(_s: float) -> None:
    return None


def controller(tmp_path: Path, error_rate: float = 0.0, sleep=no_sleep,
               **kw) -> tuple[CanaryController, RecordingActuator]:
    act = RecordingActuator()
    src = ScriptedSource(act, error_rate, **kw)
    clock = iter(range(1000, 2000)).__next__
    return CanaryController(POLICY, src, act, StateStore(tmp_path), sleep=sleep, clock=lambda: float(clock())), act


async def test_healthy_canary_is_promoted_step_by_step(tmp_path: Path) -> None:
    ctl, act = controller(tmp_path)
    state = await ctl.run("face", "v1", "v2")
    assert state.phase == "succeeded"
    assert [w["v2"] for w in act.history] == [25, 50, 75, 100, 100]
    assert [e.kind for e in state.events] == ["start", "advance", "advance", "advance", "promote"]
    text = generate_latest(ctl.metrics.registry).decode()
    assert 'servestack_canary_weight{arm="v2",route="face"} 100.0' in text
    assert 'servestack_canary_events_total{kind="advance",route="face"} 3.0' in text
    assert 'servestack_canary_phase{phase="succeeded",route="face"} 1.0' in text


async def test_error_injecting_canary_is_rolled_back_within_threshold_intervals(tmp_path: Path) -> None:
    ctl, act = controller(tmp_path, error_rate=0.2)
    state = await ctl.run("face", "v1", "v2")
    assert state.phase == "failed"
    judged = [e for e in state.events if e.kind in ("halt", "rollback")]
    assert len(judged) == POLICY.threshold
    assert act.weights == {"v1": 100.0, "v2": 0.0}
    assert judged[0].reason == "halt: error rate 20 % > 1 % (failed checks 1/2)"
    assert state.events[-1].kind == "rollback"


async def test_state_is_persisted_and_a_new_controller_resumes(tmp_path: Path) -> None:
    ctl, act = controller(tmp_path)
    state = await ctl.run("face", "v1", "v2", max_intervals=2)
    assert state.phase == "progressing" and state.canary_weight == 75
    on_disk = json.loads((tmp_path / "face.json").read_text())
    assert on_disk["canary_weight"] == 75 and on_disk["iterations"] == 2
    assert not list(tmp_path.glob(".face-*"))  # atomic write left no temp file

    ctl2, act2 = controller(tmp_path)  # "restart": fresh objects, same directory
    final = await ctl2.run("face", "v1", "v2")
    assert act2.history[0] == {"v1": 25.0, "v2": 75.0}  # re-applied the persisted weights first
    assert final.phase == "succeeded" and final.iterations == 4
    kinds = [e.kind for e in final.events]
    assert kinds == ["start", "advance", "advance", "resume", "advance", "promote"]


async def test_another_canary_on_the_route_is_refused(tmp_path: Path) -> None:
    ctl, _ = controller(tmp_path)
    await ctl.run("face", "v1", "v2", max_intervals=1)
    with pytest.raises(CanaryConflict, match="abort it first"):
        await ctl.begin("face", "v1", "v3")


async def test_abort_from_another_process_stops_the_loop(tmp_path: Path) -> None:
    operator, op_act = controller(tmp_path)
    sleeps = 0

    async def sleep_then_abort(_s: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 2:  # while the controller waits for its second interval, a person aborts
            aborted = await operator.operator("face", "rollback", "aborted by operator")
            assert aborted.events[-1].kind == "abort"

    ctl, act = controller(tmp_path, sleep=sleep_then_abort)
    final = await ctl.run("face", "v1", "v2")
    assert final.phase == "failed" and final.last_reason == "aborted by operator"
    assert op_act.history == [{"v1": 100.0, "v2": 0.0}]
    assert [w["v2"] for w in act.history] == [25, 50]  # nothing written after the abort
    assert StateStore(tmp_path).load("face").events[-1].kind == "abort"
    with pytest.raises(CanaryConflict, match="already failed"):
        await operator.operator("face", "promote", "too late")


async def test_unreachable_metrics_are_failed_checks(tmp_path: Path) -> None:
    ctl, act = controller(tmp_path, fail_calls=5)
    state = await ctl.run("face", "v1", "v2")
    assert state.phase == "failed"
    assert "metrics unavailable: ConnectError: connection refused" in state.last_reason
    assert act.weights["v2"] == 0.0
