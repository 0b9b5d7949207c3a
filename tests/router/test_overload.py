"""Deadlines and admission control through the router: what the pod is told, what is not sent, 503s."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.router.support.fakes import AUTH, FakePod, Fakes, b64, running_router, standard_fakes

HASH = {"modality": "face", "images": [b64(b"img")]}
V1 = "http://face-v1a:8080"


@dataclass
class HeaderPod(FakePod):
    """A fake pod that keeps the X-Request-Timeout-Ms of every hash call."""

    timeouts_ms: list[int] = field(default_factory=list)

    async def handle(self, method, path, headers, body):
        if path == "/v1/hash":
            self.timeouts_ms.append(int(headers["x-request-timeout-ms"]))
        return await super().handle(method, path, headers, body)


def fakes_with(pod: FakePod) -> Fakes:
    fakes = standard_fakes()
    fakes.pods[V1] = pod
    return fakes


async def test_the_pod_is_told_the_time_left(tmp_path):
    pod = HeaderPod("face", "1")
    async with running_router(tmp_path, fakes_with(pod), request_deadline_s=2.0) as router:
        pin = {**AUTH, "X-ServeStack-Arm": "face=v1"}
        assert (await router.client.post("/v1/hash", headers={**pin, "X-Request-Timeout-Ms": "800"},
                                         json=HASH)).status_code == 200
        assert (await router.client.post("/v1/hash", headers=pin, json=HASH)).status_code == 200
    # Half of what is left while a retry may follow: ~400 of 800 ms, ~1000 of the 2 s default.
    assert 300 < pod.timeouts_ms[0] <= 400 and 900 < pod.timeouts_ms[1] <= 1000


async def test_bad_timeout_header_is_a_400(tmp_path):
    async with running_router(tmp_path) as router:
        r = await router.client.post("/v1/hash", headers={**AUTH, "X-Request-Timeout-Ms": "soon"}, json=HASH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_timeout"


async def test_a_call_that_cannot_be_answered_in_time_is_not_sent(tmp_path):
    pod = HeaderPod("face", "1")
    async with running_router(tmp_path, fakes_with(pod)) as router:
        router.app.state.flow.gateway.typical_s["hasher-face-v1"] = 0.5  # this backend takes ~500 ms
        pin = {**AUTH, "X-ServeStack-Arm": "face=v1", "X-Request-Timeout-Ms": "100"}
        r = await router.client.post("/v1/hash", headers=pin, json=HASH)
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
        assert pod.calls == 0
        assert router.metric("servestack_router_deadline_exceeded_total", backend="hasher-face-v1") == 1


async def test_beyond_the_admission_limit_the_router_refuses_at_once(tmp_path):
    pod = FakePod("face", "1", mode="hang", gate=asyncio.Event())
    async with running_router(tmp_path, fakes_with(pod), admission_limit_per_replica=1, admission_adaptive=False,
                              admission_max_wait_ms=5) as router:
        pin = {**AUTH, "X-ServeStack-Arm": "face=v1"}
        held = asyncio.create_task(router.client.post("/v1/hash", headers=pin, json=HASH))
        while pod.calls == 0:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        r = await router.client.post("/v1/hash", headers=pin, json=HASH)
        assert time.monotonic() - t0 < 0.25
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        assert pod.calls == 1  # refused by the router, never sent
        assert router.metric("servestack_router_admission_refused_total", backend="hasher-face-v1") == 1
        pod.gate.set()
        assert (await held).status_code == 200
        assert (await router.client.post("/v1/hash", headers=pin, json=HASH)).status_code == 200
