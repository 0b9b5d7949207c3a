"""The fast path (router.fastpath) keeps the contract of the FastAPI routes it stands in for.

Every other router test runs with the fast path on (the default); here the same script of
requests runs both ways and must give the same statuses, error codes, metrics labels and spans.
"""

from __future__ import annotations

import httpx
import pytest

from tests.router.fakes import AUTH, LIMITED_KEY, b64, running_router


async def _script(router) -> list[tuple[int, str]]:
    """(status, error code or decision) of each request of a fixed script."""
    c = router.client
    out: list[tuple[int, str]] = []

    def record(r) -> dict:
        body = r.json()
        out.append((r.status_code, body["error"]["code"] if "error" in body else body.get("decision", "ok")))
        return body

    record(await c.post("/v1/enroll", headers=AUTH, json={"subject_id": "alice", "face": b64(b"alice-face")}))
    r = await c.post("/v1/verify", headers=AUTH, json={"subject_id": "alice", "face": b64(b"alice-face")})
    assert record(r)["trace_id"] == r.headers["x-trace-id"]
    hashed = record(await c.post("/v1/hash", headers=AUTH, json={"modality": "face", "images": [b64(b"x")] * 2}))
    assert len(hashed["codes"]) == 2 and all(len(code) == 32 for code in hashed["codes"])
    # Accepted content types: none (parsed as JSON, as FastAPI does) and +json.
    record(await c.post("/v1/hash", headers={**AUTH, "content-type": "application/vnd.api+json"},
                        content=b'{"modality": "face", "images": ["eA=="]}'))
    # Errors, each with its JSON error body.
    record(await c.post("/v1/verify", json={"subject_id": "alice", "face": b64(b"alice-face")}))
    record(await c.post("/v1/verify", headers={**AUTH, "content-type": "text/plain"}, content=b"{}"))
    bad = record(await c.post("/v1/verify", headers={**AUTH, "content-type": "application/json"}, content=b"{x"))
    assert bad["error"]["message"].startswith("body")
    extra = record(await c.post("/v1/verify", headers=AUTH,
                                json={"subject_id": "alice", "face": b64(b"a"), "extra": 1}))
    assert "body.extra" in extra["error"]["message"] and b64(b"a") not in extra["error"]["message"]
    record(await c.post("/v1/verify", headers=AUTH, json={"subject_id": "nobody", "face": b64(b"a")}))
    record(await c.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v9"},
                        json={"subject_id": "alice", "face": b64(b"alice-face")}))
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    for _ in range(3):
        r = await c.post("/v1/hash", headers=limited, json={"modality": "face", "images": [b64(b"x")]})
        record(r)
    assert int(r.headers["Retry-After"]) >= 1
    record(await c.get("/v1/hash", headers=AUTH))  # not a POST: FastAPI's 405 either way
    return out


@pytest.mark.parametrize("fast_path", [True, False])
async def test_fast_path_and_fastapi_routes_answer_alike(tmp_path, fast_path: bool) -> None:
    async with running_router(tmp_path, fast_path=fast_path) as router:
        assert await _script(router) == [
            (200, "ok"), (200, "accept"), (200, "ok"), (200, "ok"),
            (401, "unauthorized"), (422, "invalid_request"), (422, "invalid_request"), (422, "invalid_request"),
            (404, "not_enrolled"), (400, "unknown_arm"),
            (200, "ok"), (200, "ok"), (429, "rate_limited"),
            (405, "method_not_allowed"),
        ]
        # Metrics and spans name the route template, as FastAPI's routing does.
        assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/verify",
                             status="200") == 1
        assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/hash",
                             status="429") == 1
        spans = router.spans.get_finished_spans()
        servers = [s for s in spans if s.name == "POST /v1/verify"]
        assert len(servers) == 7 and all(s.attributes["http.route"] == "/v1/verify" for s in servers)
        auth = [s for s in spans if s.name == "auth" and s.parent and s.parent.span_id == servers[0].context.span_id]
        assert len(auth) == 1 and auth[0].attributes["servestack.key_name"] == "client"


async def test_an_unexpected_error_is_the_apps_500_json(tmp_path) -> None:
    async with running_router(tmp_path) as router:
        async def broken(*args, **kwargs):  # noqa: ANN002, ANN003 - stands in for HashGateway.hash
            raise RuntimeError("boom")

        router.app.state.flow.gateway.hash = broken
        transport = httpx.ASGITransport(app=router.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            r = await client.post("/v1/hash", headers=AUTH, json={"modality": "face", "images": [b64(b"x")]})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "boom" not in r.text
        assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/hash",
                             status="500") == 1
