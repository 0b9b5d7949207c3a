"""router.policy_store: hot reload of the policy file under load."""

from __future__ import annotations

import asyncio

from tests.router.support.fakes import ADMIN, AUTH, b64, running_router, standard_policy


async def test_hot_reload_under_load_fails_no_request(tmp_path):
    async with running_router(tmp_path, policy_poll_s=0.01) as router:
        subjects = [f"u{i}" for i in range(20)]
        for s in subjects:
            r = await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": s, "face": b64(s.encode())})
            assert r.status_code == 200
        stop = asyncio.Event()
        statuses: list[int] = []

        async def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                s = subjects[(worker * 7 + i) % len(subjects)]
                body = {"subject_id": s, "face": b64(s.encode())}
                r = await router.client.post("/v1/verify", headers=AUTH, json=body)
                statuses.append(r.status_code)
                i += 1

        workers = [asyncio.create_task(load(w)) for w in range(8)]
        for step in range(10):
            w2 = 10 + step * 9
            if step % 2:
                router.write_policy(standard_policy(100 - w2, w2))
                await asyncio.sleep(0.05)
            else:
                r = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN,
                                              json={"weights": {"v1": 100 - w2, "v2": w2}})
                assert r.status_code == 200
            router.policy_path.write_text("routes: [this is: not valid")  # refused, old policy stays
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*workers)
        assert len(statuses) > 50 and set(statuses) == {200}
        assert router.metric("servestack_router_policy_reloads_total", result="invalid") >= 1
        assert router.metric("servestack_router_policy_reloads_total", result="admin") == 5
        assert router.app.state.policy.current.version >= 6
