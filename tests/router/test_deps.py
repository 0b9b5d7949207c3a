"""router.deps: the trace id a request reports when tracing is disabled."""

from __future__ import annotations

from tests.router.support.fakes import AUTH, b64, running_router


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
