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
        assert len(results.outcomes) > 100 and len(after.outcomes) > 30
        assert results.failures() == [] and after.failures() == [], (results.statuses(), after.statuses())
        served_by = {m["backend"] for o in after.ok() for m in o.body["modalities"]}
        assert served_by == {f"{BACKEND}-fallback"}
        assert metric(router.url, "servestack_router_fallbacks_total") >= len(after.outcomes) - 10
