"""Admin API, hot reload under load, metrics names, spans, readiness, offline docs."""

from __future__ import annotations

import asyncio
import gc

import yaml

from router.config import RouterSettings
from tests.router.fakes import ADMIN, AUTH, b64, running_router, standard_policy


async def test_admin_get_put_patch(router):
    r = await router.client.get("/admin/v1/policy", headers=ADMIN)
    assert r.json()["policy"]["routes"]["face"]["arms"][1]["weight"] == 10
    r = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN,
                                  json={"weights": {"v1": 70, "v2": 30}})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert router.metric("servestack_router_policy_weight", route="face", arm="v2") == 30
    on_disk = yaml.safe_load(router.policy_path.read_text())
    assert [a["weight"] for a in on_disk["routes"]["face"]["arms"]] == [70, 30]  # persisted
    bad = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN, json={"weights": {"v9": 1}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "policy_invalid"
    missing = await router.client.patch("/admin/v1/routes/iris/weights", headers=ADMIN, json={"weights": {"v1": 1}})
    assert missing.status_code == 404
    data = standard_policy(50, 50)
    r = await router.client.put("/admin/v1/policy", headers=ADMIN, json=data)
    assert r.status_code == 200 and r.json()["version"] == 3
    data["routes"]["face"]["arms"][0]["backend"] = "ghost"
    r = await router.client.put("/admin/v1/policy", headers=ADMIN, json=data)
    assert r.status_code == 422 and "ghost" in r.json()["error"]["message"]
    assert router.app.state.policy.current.version == 3


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
                # A hand edit, bumping the document's version as an operator should.
                router.write_policy({"version": 100 + step, **standard_policy(100 - w2, w2)})
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
        assert router.app.state.policy.current.version == 109  # the version comes from the document


async def test_metrics_use_the_interface_names(router):
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "m", "face": b64(b"m")})
    await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "m", "face": b64(b"m")})
    text = (await router.client.get("/metrics")).text
    for name in ("servestack_router_http_requests_total", "servestack_router_http_request_duration_seconds_bucket",
                 "servestack_router_upstream_requests_total", "servestack_router_upstream_duration_seconds_bucket",
                 "servestack_router_inflight_requests", "servestack_router_decisions_total",
                 "servestack_router_policy_weight", "servestack_router_spans_dropped_total"):
        assert name in text, name
    assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/verify",
                         status="200") == 1
    assert router.metric("servestack_router_inflight_requests", backend="hasher-face-v1") == 0


async def test_spans_of_a_verification_share_the_returned_trace_id(router):
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "t", "face": b64(b"t")})
    router.spans.clear()
    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "t", "face": b64(b"t")})
    trace_id = r.headers["x-trace-id"]
    spans = [s for s in router.spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    # Spans for hops and timed work only; auth, the arm choice and the replica pick are attributes
    # and events of the spans around them.
    assert sorted(s.name for s in spans) == ["POST /v1/verify", "audit.write", "upstream.hash"]
    server = next(s for s in spans if s.parent is None)
    assert server.attributes["servestack.key_name"] == "client"
    (decide,) = [e for e in server.events if e.name == "feature_flag.evaluation"]
    assert decide.attributes["servestack.arm"] in ("v1", "v2") and decide.attributes["servestack.route"] == "face"
    assert decide.attributes["feature_flag.key"] == "face-v2"
    assert decide.attributes["feature_flag.result.variant"] == decide.attributes["servestack.arm"]
    (upstream,) = [s for s in spans if s.name == "upstream.hash"]
    assert upstream.attributes["servestack.arm"] == decide.attributes["servestack.arm"]
    assert upstream.attributes["server.address"].startswith("http://127.0.0.1:")
    assert all(s.parent is not None for s in spans if s is not server)
    audit = (await router.client.get(f"/v1/audit/{r.json()['audit_id']}", headers=AUTH)).json()
    assert audit["trace_id"] == trace_id


async def test_with_tracing_disabled_header_body_and_audit_agree_on_the_zero_trace_id(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    async with running_router(tmp_path) as router:
        await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "z", "face": b64(b"z")})
        r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "z", "face": b64(b"z")})
        assert r.status_code == 200
        assert r.headers["x-trace-id"] == r.json()["trace_id"] == "0" * 32
        audit = (await router.client.get(f"/v1/audit/{r.json()['audit_id']}", headers=AUTH)).json()
        assert audit["trace_id"] == "0" * 32
        assert router.spans.get_finished_spans() == ()


async def test_readiness_and_liveness(tmp_path):
    async with running_router(tmp_path) as router:
        assert (await router.client.get("/healthz")).json() == {"status": "ok"}
        for _ in range(100):
            if router.app.state.health.rounds:
                break
            await asyncio.sleep(0.01)
        r = await router.client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        for pod in router.fakes.pods.values():
            pod.ready = False
        # One or two failed probes are a blip (an overloaded pod answers late), not an outage.
        for _ in range(router.app.state.settings.health_unhealthy_threshold - 1):
            await router.app.state.health.check_all()
            assert (await router.client.get("/readyz")).status_code == 200
        await router.app.state.health.check_all()
        r = await router.client.get("/readyz")
        assert r.status_code == 503 and "no healthy replica" in r.json()["error"]["message"]
        for pod in router.fakes.pods.values():
            pod.ready = True
        await router.app.state.health.check_all()
        assert (await router.client.get("/readyz")).status_code == 200


async def test_start_up_freezes_what_is_alive_and_spaces_young_collections(tmp_path):
    gc.unfreeze()
    threshold = gc.get_threshold()
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    try:
        async with running_router(tmp_path / "off") as router:  # the harness's default: both off
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
            assert router.app.state.started
        async with running_router(tmp_path / "on", gc_freeze=True, gc_gen0_threshold=10_000) as router:
            # The router's start-up objects (FastAPI, pydantic, SQLAlchemy, OTel) are out of reach
            # of later collections, young collections come every 10,000 net allocations; a
            # request still works.
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (10_000, *threshold[1:])
            r = await router.client.post("/v1/hash", json={"modality": "face", "images": [b64(b"x")]}, headers=AUTH)
            assert r.status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_docs_work_offline_and_document_the_threshold(router):
    page = (await router.client.get("/docs")).text
    assert "/docs-static/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    asset = await router.client.get("/docs-static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert (await router.client.get("/redoc")).status_code == 200
    assert (await router.client.get("/docs-static/redoc.standalone.js")).status_code == 200
    spec = (await router.client.get("/openapi.json")).json()
    assert "Default threshold: 24" in spec["info"]["description"]
    assert {"/v1/enroll", "/v1/verify", "/v1/hash", "/v1/audit/{audit_id}",
            "/v1/audit/{audit_id}/explanation", "/admin/v1/policy"} <= set(spec["paths"])


def test_settings_refuse_unsafe_defaults(monkeypatch, tmp_path):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("SERVESTACK_ROUTER_POLICY_PATH", str(tmp_path / "p.yaml"))
    with pytest.raises(ValidationError, match="keys_file is required"):
        RouterSettings()
    monkeypatch.setenv("SERVESTACK_ROUTER_AUTH_DISABLED", "true")
    monkeypatch.setenv("SERVESTACK_ROUTER_DEFAULT_THRESHOLD", "30")
    assert RouterSettings().default_threshold == 30
    monkeypatch.setenv("SERVESTACK_ROUTER_DEFAULT_THRESHOLD", "60")
    with pytest.raises(ValidationError):
        RouterSettings()
