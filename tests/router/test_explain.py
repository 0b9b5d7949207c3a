"""router.explain: explanations cached with the audit record, SSE relayed."""

from __future__ import annotations

from tests.router.support.fakes import AUTH, b64, enroll


async def test_audit_explanation_json_is_cached_and_sse_is_relayed(router):
    await enroll(router, "fay", face=b"fay")
    rec = (await router.client.post("/v1/verify", headers=AUTH,
                                    json={"subject_id": "fay", "face": b64(b"fay")})).json()
    url = f"/v1/audit/{rec['audit_id']}/explanation"
    sse = await router.client.get(url, headers={**AUTH, "Accept": "text/event-stream"})
    assert sse.status_code == 200 and sse.headers["content-type"].startswith("text/event-stream")
    assert "event: delta" in sse.text and "event: final" in sse.text
    first = (await router.client.get(url, headers=AUTH)).json()
    again = (await router.client.get(url, headers=AUTH)).json()
    assert first == again and first["text"] == "The decision was accept."
    assert router.fakes.explainer.calls == 1  # the SSE generation was cached, JSON reads hit the cache
    missing = await router.client.get(f"/v1/audit/{'0' * 32}/explanation", headers=AUTH)
    assert missing.status_code == 404
