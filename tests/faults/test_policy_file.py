"""Fault matrix, policy file: corrupted or invalid, the last good policy stays, with a metric and a log line."""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.faults.harness import drive, enroll, hashers, metric, policy, start_router, wait_for
from tests.router.support.fakes import ADMIN

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SUBJECTS = [f"p{i}" for i in range(5)]


def weight(url: str) -> float:
    body = httpx.get(f"{url}/admin/v1/policy", headers=ADMIN, timeout=5).json()
    return body["policy"]["routes"]["face"]["arms"][0]["weight"]


BAD_FILES = [
    ("backends: {hasher-face-v1: {endpoints: [\n  routes: ][", "not valid YAML"),  # a torn write
    ("backends: {b: {endpoints: ['http://127.0.0.1:9']}}\n"
     "routes: {face: {arms: [{name: v1, backend: nowhere, weight: 100}]}}\n", "nowhere"),  # valid YAML, invalid policy
    ("", "expected a mapping"),  # truncated to nothing
]


async def test_bad_policy_file_keeps_the_last_good_policy(tmp_path):
    with hashers(tmp_path, replicas=1) as pods:
        spec = policy(pods.urls, pods.fallback_url)
        with start_router(tmp_path, spec) as router:
            async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
                await enroll(client, SUBJECTS)
                assert weight(router.url) == 100
                for n, (content, why) in enumerate(BAD_FILES, start=1):
                    router.policy_path.write_text(content)
                    wait_for(lambda n=n: metric(router.url, "servestack_router_policy_reloads_total",
                                                {"result": "invalid"}) >= n, 10, f"refused reload {n} to be counted")
                    results = await drive(client, seconds=1, workers=2, subjects=SUBJECTS)
                    assert results.failures() == [] and len(results.outcomes) > 5, results.statuses()
                    assert weight(router.url) == 100  # the last good policy, still in force
                    refusals = [line for line in router.log.read_text().splitlines()
                                if "policy change refused" in line]
                    assert len(refusals) == n and why in refusals[-1]
                # A good file afterwards is taken up: the watcher is still alive.
                spec["routes"]["face"]["arms"][0]["weight"] = 50
                router.policy_path.write_text(yaml.safe_dump(spec))
                wait_for(lambda: weight(router.url) == 50, 10, "the good policy to load")
