"""Fault matrix, hashers: a replica killed under load, one slowed by 2 s, one that never answers."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.faults.harness import BACKEND, drive, enroll, hashers, metric, policy, start_router

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SUBJECTS = [f"s{i}" for i in range(20)]


async def test_replica_killed_under_load_fails_no_request(tmp_path):
    with hashers(tmp_path, replicas=2) as pods, start_router(tmp_path, policy(pods.urls, pods.fallback_url)) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            await enroll(client, SUBJECTS)
            victim = pods.procs[0]
            results = await drive(client, seconds=4, workers=8, subjects=SUBJECTS, during=1.5,
                                  action=lambda: victim.send_signal(signal.SIGKILL))
            # Then the last replica too: the fallback backend serves.
            pods.procs[1].send_signal(signal.SIGKILL)
            after = await drive(client, seconds=2, workers=8, subjects=SUBJECTS)
        assert victim.poll() is not None
        assert len(results.outcomes) > 50 and len(after.outcomes) > 10
        assert results.failures() == [] and after.failures() == [], (results.statuses(), after.statuses())
        served_by = {m["backend"] for o in after.ok() for m in o.body["modalities"]}
        assert served_by == {f"{BACKEND}-fallback"}
        assert metric(router.url, "servestack_router_fallbacks_total") >= len(after.outcomes) - 10


async def test_replica_slowed_by_2_s_is_ejected_and_p99_stays_bounded(tmp_path):
    with hashers(tmp_path, replicas=2) as pods, start_router(tmp_path, policy(pods.urls, pods.fallback_url)) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            await enroll(client, SUBJECTS)
            slow = pods.proxies[0]
            slow.delay_s, slow.mode = 2.0, "delay"
            results = await drive(client, seconds=4, workers=8, subjects=SUBJECTS)
        assert len(results.outcomes) > 50
        assert results.failures() == [], results.statuses()
        # A try gets at most half of the 2 s deadline, then the request is retried on the other replica.
        assert results.latency_quantile(0.99) < 1.5, results.latency_quantile(0.99)
        assert metric(router.url, "servestack_router_ejections_total", {"backend": BACKEND}) >= 1
        # Once out, the slow replica is no longer waited for: the second half of the run is fast.
        late = [o for o in results.outcomes if o.started > results.outcomes[0].started + 2.5]
        assert results.latency_quantile(0.99, late) < 0.5


async def test_replica_that_never_answers_is_answered_within_the_deadline_and_ejected(tmp_path):
    with hashers(tmp_path, replicas=2) as pods, start_router(tmp_path, policy(pods.urls, pods.fallback_url)) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            await enroll(client, SUBJECTS)
            pods.proxies[0].mode = "blackhole"
            results = await drive(client, seconds=4, workers=8, subjects=SUBJECTS,
                                  headers={"X-Request-Timeout-Ms": "1000"})
        assert len(results.outcomes) > 50
        # Every request answered within its 1 s deadline (plus scheduling slack), none by a client timeout.
        assert max(o.latency_s for o in results.outcomes) < 1.3
        assert results.failures() == [], results.statuses()
        assert metric(router.url, "servestack_router_ejections_total", {"backend": BACKEND}) >= 1
