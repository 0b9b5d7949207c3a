"""Fault matrix, explainer: down, verification unaffected, 503 explainer_unavailable; back, served again."""

from __future__ import annotations

import contextlib
import signal
import sys
import time

import httpx
import pytest

from tests.faults.harness import FAKE_EXPLAINER, drive, enroll, face, hashers, policy, start_router
from tests.router.support.fakes import AUTH
from tests.support.procs import free_port, process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SUBJECTS = [f"e{i}" for i in range(10)]


def explainer(port: int, log):
    return process([sys.executable, "-m", FAKE_EXPLAINER, str(port)], f"http://127.0.0.1:{port}/readyz", log)


async def new_audit_id(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/verify", headers=AUTH, json=face(SUBJECTS[0]))
    assert r.status_code == 200, r.text
    return r.json()["audit_id"]


async def test_explainer_down_and_back(tmp_path):
    port = free_port()
    explainer_url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        pods = stack.enter_context(hashers(tmp_path, replicas=1))
        proc = stack.enter_context(explainer(port, tmp_path / "explainer-1.log"))
        router = stack.enter_context(start_router(tmp_path, policy(pods.urls, pods.fallback_url, explainer_url)))
        async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
            await enroll(client, SUBJECTS)
            r = await client.get(f"/v1/audit/{await new_audit_id(client)}/explanation", headers=AUTH)
            assert r.status_code == 200 and r.json()["text"] == "The decision was accept."

            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # At once, before the health checks notice: the call fails and the template answers.
            r = await client.get(f"/v1/audit/{await new_audit_id(client)}/explanation", headers=AUTH)
            assert (r.status_code == 200 and r.json()["source"] == "template") or r.status_code == 503, r.text
            # Once the health checks mark it down: 503 explainer_unavailable with Retry-After, JSON and SSE.
            time.sleep(2)
            r = await client.get(f"/v1/audit/{await new_audit_id(client)}/explanation", headers=AUTH)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "explainer_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            sse = await client.get(f"/v1/audit/{await new_audit_id(client)}/explanation",
                                   headers={**AUTH, "Accept": "text/event-stream"})
            assert sse.status_code == 503 and sse.json()["error"]["code"] == "explainer_unavailable"
            results = await drive(client, seconds=2, workers=4, subjects=SUBJECTS)
            assert len(results.outcomes) > 20 and results.failures() == [], results.statuses()

            stack.enter_context(explainer(port, tmp_path / "explainer-2.log"))
            audit_id = await new_audit_id(client)
            deadline = time.monotonic() + 10
            while True:
                r = await client.get(f"/v1/audit/{audit_id}/explanation", headers=AUTH)
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            assert r.json()["audit_id"] == audit_id
