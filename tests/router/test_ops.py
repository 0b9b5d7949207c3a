"""router.ops: liveness, readiness and the offline docs."""

from __future__ import annotations

import asyncio

from tests.router.support.fakes import running_router


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
    # The POST endpoints' handlers parse their bodies themselves; the routes still declare them.
    verify = spec["paths"]["/v1/verify"]["post"]
    assert {"subject_id", "face", "threshold"} <= set(verify["requestBody"]["content"]["application/json"]
                                                      ["schema"]["properties"])
    assert verify["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AuditRecord")
