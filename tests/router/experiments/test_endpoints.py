"""GET /v1/experiments/{name} (+ /report) on the real router app with its real audit store.

The app is built by the router's own test harness (fake pods behind real sockets) and
includes ``build_router()`` exactly as router/app.py does.
"""

from __future__ import annotations

import pytest

from router.experiments.endpoints import build_router
from tests.router.support.fakes import ADMIN, AUTH, b64


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
    assert v1["subjects"] == v1["requests"]  # one verification per subject
    assert set(v1["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    assert body["srm"]["observed"] == got  # every subject first assigned in the window
    assert body["srm"]["expected"]["v1"] == pytest.approx(27.0)
    assert body["excluded"] == {} and body["errors"] == [] and body["threshold"] == 24


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


async def test_pinned_rows_are_counted_apart(harness) -> None:
    await traffic(harness, subjects=4)
    pin = {**AUTH, "X-ServeStack-Arm": "face=v2"}
    r = await harness.client.post("/v1/verify", json={"subject_id": "s0", "face": b64(b"face-0")}, headers=pin)
    assert r.status_code == 200, r.text
    body = (await harness.client.get("/v1/experiments/face-v2", headers=AUTH)).json()
    assert body["total"] == 4 and body["excluded"] == {"pinned": 1}


async def test_outcomes_give_far_and_frr_per_arm(harness) -> None:
    await traffic(harness, subjects=6)
    ids = []
    for i in range(6):  # genuine probes (same image) and impostor probes (another subject's image)
        image = b64(f"face-{i}".encode()) if i % 2 else b64(f"face-{(i + 1) % 6}".encode())
        r = await harness.client.post("/v1/verify", json={"subject_id": f"s{i}", "face": image}, headers=AUTH)
        ids.append((r.json()["audit_id"], bool(i % 2), r.json()["modalities"][0]))
    for audit_id, genuine, _ in ids:
        r = await harness.client.post(f"/v1/audit/{audit_id}/outcome", json={"genuine": genuine}, headers=AUTH)
        assert r.status_code == 200 and r.json() == {"audit_id": audit_id, "genuine": genuine, "stored": True}
    again = await harness.client.post(f"/v1/audit/{ids[0][0]}/outcome", json={"genuine": ids[0][1]}, headers=AUTH)
    assert again.status_code == 200 and again.json()["stored"] is False
    conflict = await harness.client.post(f"/v1/audit/{ids[0][0]}/outcome", json={"genuine": not ids[0][1]},
                                         headers=AUTH)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "outcome_conflict"
    body = (await harness.client.get("/v1/experiments/face-v2", headers=AUTH)).json()
    for e in body["errors"]:
        mine = [(g, m) for _, g, m in ids if m["arm"] == e["arm"]]
        gen = [m for g, m in mine if g]
        imp = [m for g, m in mine if not g]
        assert (e["genuine"], e["impostor"]) == (len(gen), len(imp))
        if gen:
            assert e["frr"] == pytest.approx(sum(m["distance"] > 24 for m in gen) / len(gen))
        if imp:
            assert e["far"] == pytest.approx(sum(m["distance"] <= 24 for m in imp) / len(imp))
    assert sum(e["genuine"] + e["impostor"] for e in body["errors"]) == 6


async def test_outcome_bad_input_and_unknown_record(harness) -> None:
    await traffic(harness, subjects=1)
    url = "/v1/audit/" + "0" * 32 + "/outcome"
    assert (await harness.client.post(url, json={"genuine": True}, headers=AUTH)).status_code == 404
    r = await harness.client.post("/v1/verify", json={"subject_id": "s0", "face": b64(b"face-0")}, headers=AUTH)
    url = f"/v1/audit/{r.json()['audit_id']}/outcome"
    for bad in ({"genuine": "yes"}, {"genuine": 1}, {}, {"genuine": True, "extra": 1}):
        resp = await harness.client.post(url, json=bad, headers=AUTH)
        assert resp.status_code == 422 and "error" in resp.json(), bad
    assert (await harness.client.post(url, json={"genuine": True})).status_code == 401
    assert (await harness.client.post("/v1/audit/nothex/outcome", json={"genuine": True},
                                      headers=AUTH)).status_code in (404, 422)


async def test_list_experiments_with_weights_in_force_and_since(harness) -> None:
    await traffic(harness, subjects=2)
    r = await harness.client.get("/v1/experiments", headers=AUTH)
    assert r.status_code == 200, r.text
    by_name = {e["name"]: e for e in r.json()["experiments"]}
    face = by_name["face-v2"]
    assert face["route"] == "face" and [(a["name"], a["weight"], a["share"]) for a in face["arms"]] == [
        ("v1", 90.0, 90.0), ("v2", 10.0, 10.0)]
    assert face["since"] is not None and face["policy_version"] >= 1
    assert by_name["fingerprint"]["route"] == "fingerprint"
    patch = await harness.client.patch("/admin/v1/routes/face/weights", json={"weights": {"v1": 50, "v2": 50}},
                                       headers=ADMIN)
    assert patch.status_code == 200, patch.text
    face = {e["name"]: e for e in (await harness.client.get("/v1/experiments", headers=AUTH)).json()["experiments"]}
    assert [a["share"] for a in face["face-v2"]["arms"]] == [50.0, 50.0]
    assert face["face-v2"]["since"] is None  # no verification under the new version yet
    r = await harness.client.post("/v1/verify", json={"subject_id": "s0", "face": b64(b"face-0")}, headers=AUTH)
    assert r.status_code == 200, r.text
    face = {e["name"]: e for e in (await harness.client.get("/v1/experiments", headers=AUTH)).json()["experiments"]}
    assert face["face-v2"]["since"] > by_name["face-v2"]["since"]
    assert (await harness.client.get("/v1/experiments")).status_code == 401
