"""router.endpoints: one body per POST endpoint, reached by the FastAPI route and the fast dispatch.

The same script of requests runs against a router with the fast dispatch and one without (its
FastAPI routes serve); every answer must be the same bytes: status, headers and body, for every
endpoint and every error. Only what differs by nature between two requests is masked: trace and
audit ids, timestamps and latencies (and so the content-length of the bodies carrying them).
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.router.support.fakes import AUTH, LIMITED_KEY, OPS_KEY, assert_error, b64, running_router, standard_fakes

_VOLATILE = re.compile(rb'"(trace_id|audit_id)":"[0-9a-f]{32}"|"(created_at|latency_ms)":[0-9.e+-]+')
_PER_REQUEST_HEADERS = {b"x-trace-id", b"traceparent"}
MAX_BODY = 64 * 1024


def _answer(r: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = _VOLATILE.sub(lambda m: m.group(0).split(b":", 1)[0] + b":_", r.content)
    masked = body != r.content
    headers = [(k.lower(), v) for k, v in r.headers.raw if k.lower() not in _PER_REQUEST_HEADERS
               and not (masked and k.lower() == b"content-length")]
    return r.status_code, headers, body


async def _script(c: httpx.AsyncClient) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    face = {"subject_id": "alice", "face": b64(b"alice-face")}
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    requests = [
        ("POST", "/v1/enroll", AUTH, face),
        ("POST", "/v1/verify", AUTH, face),
        ("POST", "/v1/hash", AUTH, {"modality": "face", "images": [b64(b"x")] * 2, "subject_id": "s"}),
        # Accepted content types: none (parsed as JSON, as FastAPI does) and +json.
        ("POST", "/v1/hash", {**AUTH, "content-type": "application/vnd.api+json"},
         b'{"modality": "face", "images": ["eA=="], "subject_id": "s"}'),
        ("POST", "/v1/hash", {k: v for k, v in AUTH.items()},
         b'{"modality": "face", "images": ["eA=="], "subject_id": "s"}'),
        # 401, 403
        ("POST", "/v1/verify", {}, face),
        ("POST", "/v1/verify", {"Authorization": "Bearer sk-nobody"}, face),
        ("POST", "/v1/enroll", {"X-API-Key": OPS_KEY}, face),
        # 422: content type, broken JSON, unknown field (the image never echoed), missing field
        ("POST", "/v1/verify", {**AUTH, "content-type": "text/plain"}, b"{}"),
        ("POST", "/v1/verify", {**AUTH, "content-type": "application/json"}, b"{x"),
        ("POST", "/v1/verify", AUTH, {**face, "extra": 1}),
        ("POST", "/v1/hash", AUTH, {"modality": "iris", "images": []}),
        ("POST", "/v1/enroll", AUTH, {"subject_id": "bob"}),
        # 400: bad base64, unknown arm, bad pin header; 413: image over the limit, body over the limit
        ("POST", "/v1/hash", AUTH, {"modality": "face", "images": ["not base64!"]}),
        ("POST", "/v1/verify", {**AUTH, "X-ServeStack-Arm": "face=v9"}, face),
        ("POST", "/v1/verify", {**AUTH, "X-ServeStack-Arm": "face"}, face),
        ("POST", "/v1/hash", AUTH, {"modality": "face", "images": [b64(b"x" * 5000)]}),
        ("POST", "/v1/enroll", AUTH, {"subject_id": "big", "face": "A" * (MAX_BODY + 1)}),
        # 404: not enrolled, unknown path; 405: not a POST
        ("POST", "/v1/verify", AUTH, {"subject_id": "nobody", "face": b64(b"a")}),
        ("POST", "/v1/nothing", AUTH, {}),
        ("GET", "/v1/hash", AUTH, None),
        # 503: every replica of the fingerprint backend fails
        ("POST", "/v1/enroll", AUTH, {"subject_id": "carol", "fingerprint": b64(b"carol")}),
        # 429 with Retry-After
        *[("POST", "/v1/hash", limited, {"modality": "face", "images": [b64(b"x")], "subject_id": "s"})] * 3,
    ]
    out = []
    for method, path, headers, body in requests:
        content = body if isinstance(body, bytes) else None
        r = await c.request(method, path, headers=headers, content=content,
                            json=None if content is not None or body is None else body)
        out.append(_answer(r))
    return out


async def test_fast_dispatch_and_fastapi_routes_answer_the_same_bytes(tmp_path) -> None:
    fakes = standard_fakes()
    fakes.pods["http://finger-v1a:8080"].mode = "fail"
    answers = {}
    for fast in (True, False):
        (tmp_path / str(fast)).mkdir()
        async with running_router(tmp_path / str(fast), fakes=fakes, fast_path=fast, max_body_bytes=MAX_BODY,
                                  max_image_bytes=4096) as router:
            answers[fast] = await _script(router.client)
    statuses = [a[0] for a in answers[True]]
    assert statuses == [200, 200, 200, 200, 200, 401, 401, 403, 422, 422, 422, 422, 422,
                        400, 400, 400, 413, 413, 404, 404, 405, 503, 200, 200, 429]
    for fast_answer, route_answer in zip(answers[True], answers[False], strict=True):
        assert fast_answer == route_answer
    by_status = dict(zip(statuses, answers[True], strict=False))
    assert b'"code": "unknown_arm"' in answers[True][14][2]
    assert (b"retry-after", b"1") in by_status[503][1] and b"upstream_unavailable" in by_status[503][2]
    assert any(k == b"retry-after" and int(v) >= 1 for k, v in by_status[429][1])
    extra = answers[True][10][2].decode()
    assert "body.extra" in extra and b64(b"alice-face") not in extra


@pytest.mark.parametrize("fast_path", [True, False])
async def test_metrics_and_spans_name_the_route_template(tmp_path, fast_path: bool) -> None:
    async with running_router(tmp_path, fast_path=fast_path) as router:
        c = router.client
        await c.post("/v1/enroll", headers=AUTH, json={"subject_id": "a", "face": b64(b"a")})
        assert (await c.post("/v1/verify", headers=AUTH, json={"subject_id": "a", "face": b64(b"a")})).is_success
        assert (await c.post("/v1/verify", json={"subject_id": "a", "face": b64(b"a")})).status_code == 401
        assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/verify",
                             status="200") == 1
        assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/verify",
                             status="401") == 1
        servers = [s for s in router.spans.get_finished_spans() if s.name == "POST /v1/verify"]
        assert [s.attributes["http.route"] for s in servers] == ["/v1/verify"] * 2
        # Auth is no span: the key's name is an attribute of the server span.
        assert [s.attributes.get("servestack.key_name") for s in servers] == ["client", None]
        assert all(s.name != "auth" for s in router.spans.get_finished_spans())


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


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/verify", {"subject_id": "a", "face": "not base64!!"}, 400, "invalid_input"),
        ("/v1/verify", {"subject_id": "a", "face": ""}, 400, "invalid_input"),
        ("/v1/verify", {"subject_id": "a"}, 422, "invalid_request"),
        ("/v1/verify", {"subject_id": "a", "face": b64(b"x"), "extra": 1}, 422, "invalid_request"),
        ("/v1/verify", {"subject_id": "a", "face": b64(b"x"), "threshold": 4}, 422, "invalid_request"),
        ("/v1/verify", {"subject_id": "a", "face": b64(b"x"), "threshold": 51}, 422, "invalid_request"),
        ("/v1/verify", {"subject_id": "bad id with spaces", "face": b64(b"x")}, 422, "invalid_request"),
        ("/v1/verify", [1, 2], 422, "invalid_request"),
        ("/v1/enroll", {"subject_id": "a", "iris": b64(b"x")}, 422, "invalid_request"),
        ("/v1/hash", {"modality": "iris", "images": [b64(b"x")]}, 422, "invalid_request"),
        ("/v1/hash", {"modality": "face", "images": []}, 422, "invalid_request"),
        ("/v1/hash", {"modality": "face", "images": [b64(b"x")] * 17}, 400, "invalid_input"),
    ],
)
async def test_bad_inputs_are_4xx_json(router, path, body, status, code):
    assert_error(await router.client.post(path, json=body, headers=AUTH), status, code)


async def test_malformed_json_and_unknown_paths(router):
    r = await router.client.post("/v1/verify", content=b"{not json",
                                 headers={**AUTH, "content-type": "application/json"})
    assert_error(r, 422, "invalid_request")
    assert_error(await router.client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    assert_error(await router.client.get("/v1/verify", headers=AUTH), 405, "method_not_allowed")
    assert_error(await router.client.get("/v1/audit/xyz", headers=AUTH), 422, "invalid_request")
    assert_error(await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "garbage"},
                                  json={"subject_id": "a", "face": b64(b"x")}), 400, "invalid_input")
