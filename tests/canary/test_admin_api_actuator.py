"""The canary's admin-API actuator writes with If-Match and never overwrites another writer's weights."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from canary.actuators import ActuatorError
from canary.actuators.admin_api import AdminApiActuator
from tests.router.support.fakes import ADMIN, ADMIN_KEY, running_router


async def test_retries_after_an_unrelated_write_and_refuses_to_overwrite_its_arms(tmp_path: Path) -> None:
    async with running_router(tmp_path) as router:
        sent: list[str | None] = []

        async def record(request: httpx.Request) -> None:
            if request.method == "PATCH":
                sent.append(request.headers.get("if-match"))

        router.client.event_hooks["request"].append(record)
        act = AdminApiActuator(router.client, "http://router", ADMIN_KEY)
        await act.set_weights("face", {"v1": 80, "v2": 20})
        assert await act.get_weights("face") == {"v1": 80.0, "v2": 20.0}

        # Someone changes another route: the actuator's ETag is stale, a 412, a re-read, a retry.
        other = await router.client.patch("/admin/v1/routes/fingerprint/weights", json={"weights": {"v1": 50}},
                                          headers=ADMIN)
        assert other.status_code == 200
        sent.clear()
        await act.set_weights("face", {"v1": 60, "v2": 40})
        assert len(sent) == 2 and None not in sent and sent[0] != sent[1]  # stale ETag (412), then the new one
        policy = router.app.state.policy.current
        assert policy.weights("face") == {"v1": 60, "v2": 40} and policy.weights("fingerprint") == {"v1": 50}

        # An operator moves the canary's own arms: the actuator refuses instead of reverting them.
        moved = await router.client.patch("/admin/v1/routes/face/weights", json={"weights": {"v1": 100, "v2": 0}},
                                          headers=ADMIN)
        assert moved.status_code == 200
        with pytest.raises(ActuatorError, match="changed by another writer"):
            await act.set_weights("face", {"v1": 40, "v2": 60})
        assert router.app.state.policy.current.weights("face") == {"v1": 100, "v2": 0}
