"""GET /v1/experiments/{name} (+ /report) on the real router app with its real audit store.

The app is built by the router's own test harness (fake pods behind real sockets) and
includes ``build_router()`` exactly as router/app.py does.
"""

from __future__ import annotations

import pytest

from router.experiments.endpoints import build_router
from tests.router.support.fakes import AUTH, b64


@pytest.fixture
async def harness(router):
    if not any(getattr(r, "path", "").startswith("/v1/experiments") for r in router.app.routes):
        router.app.include_router(build_router())
    return router


async def traffic(h, subjects: int = 30) -> dict[str, int]:
    arms: dict[str, int] = {}
    for i in range(subjects):
        image = b64(f"face-{i}".encode())
        r = await h.client.post("/v1/enroll", json={"subject_id": f"s{i}", "face": image}, headers=AUTH)
        assert r.status_code == 200, r.text
        r = await h.client.post("/v1/verify", json={"subject_id": f"s{i}", "face": image}, headers=AUTH)
        assert r.status_code == 200, r.text
        arm = r.json()["modalities"][0]["arm"]
        arms[arm] = arms.get(arm, 0) + 1
    return arms


async def test_json_report_counts_the_audited_verifications(harness) -> None:
    arms = await traffic(harness)
    r = await harness.client.get("/v1/experiments/face-v2", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["route"] == "face" and body["total"] == 30
    got = {a["arm"]: a["requests"] for a in body["arms"]}
    assert got == {"v1": arms.get("v1", 0), "v2": arms.get("v2", 0)}
    v1 = next(a for a in body["arms"] if a["arm"] == "v1")
    assert v1["configured_weight"] == 90 and v1["accept_rate"] == 1.0  # same image: distance 0
    assert set(v1["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    assert body["srm"]["observed"] == got


async def test_report_page_auth_and_unknown_experiment(harness) -> None:
    await traffic(harness, subjects=3)
    page = await harness.client.get("/v1/experiments/face-v2/report", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and "Experiment face-v2" in page.text
    assert (await harness.client.get("/v1/experiments/face-v2")).status_code == 401
    missing = await harness.client.get("/v1/experiments/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # the route name works when a route has no experiment name of its own
    assert (await harness.client.get("/v1/experiments/fingerprint", headers=AUTH)).json()["total"] == 0
    later = await harness.client.get("/v1/experiments/face-v2", params={"since": 4e9}, headers=AUTH)
    assert later.json()["total"] == 0
