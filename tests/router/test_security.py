"""Auth, scopes, rate limits, body limits and strict validation: 4xx JSON, never a 500."""

from __future__ import annotations

import pytest

from router.auth import hash_key
from tests.router.fakes import ADMIN_KEY, AUTH, LIMITED_KEY, b64, running_router


def _err(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_missing_wrong_and_underscoped_keys(router):
    body = {"modality": "face", "images": [b64(b"x")]}
    _err(await router.client.post("/v1/hash", json=body), 401, "unauthorized")
    _err(await router.client.post("/v1/hash", json=body, headers={"Authorization": "Bearer nope"}), 401,
         "unauthorized")
    _err(await router.client.get("/admin/v1/policy", headers=AUTH), 403, "forbidden")
    ok = await router.client.get("/admin/v1/policy", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and ok.json()["version"] == 1


async def test_rate_limit_gives_429_with_retry_after(router):
    headers = {"X-API-Key": LIMITED_KEY}
    body = {"modality": "face", "images": [b64(b"x")]}
    statuses = [(await router.client.post("/v1/hash", json=body, headers=headers)).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]  # burst 2, 0.5/s
    r = await router.client.post("/v1/hash", json=body, headers=headers)
    _err(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert router.metric("servestack_router_rate_limited_total", key="limited") == 3
    # Another key is not affected.
    assert (await router.client.post("/v1/hash", json=body, headers=AUTH)).status_code == 200


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
    _err(await router.client.post(path, json=body, headers=AUTH), status, code)


async def test_malformed_json_and_unknown_paths(router):
    r = await router.client.post("/v1/verify", content=b"{not json",
                                 headers={**AUTH, "content-type": "application/json"})
    _err(r, 422, "invalid_request")
    _err(await router.client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    _err(await router.client.get("/v1/verify", headers=AUTH), 405, "method_not_allowed")
    _err(await router.client.get("/v1/audit/xyz", headers=AUTH), 422, "invalid_request")
    _err(await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "garbage"},
                                  json={"subject_id": "a", "face": b64(b"x")}), 400, "invalid_input")


async def test_body_and_image_size_limits(tmp_path):
    async with running_router(tmp_path, max_body_bytes=2000, max_image_bytes=500) as router:
        big = {"subject_id": "a", "face": b64(b"x" * 3000)}
        _err(await router.client.post("/v1/verify", json=big, headers=AUTH), 413, "payload_too_large")

        async def chunked():
            yield b'{"subject_id": "a", "face": "'
            for _ in range(10):
                yield b"A" * 400
            yield b'"}'

        r = await router.client.post("/v1/verify", content=chunked(),
                                     headers={**AUTH, "content-type": "application/json"})
        _err(r, 413, "payload_too_large")
        image = {"subject_id": "a", "face": b64(b"x" * 900)}
        _err(await router.client.post("/v1/verify", json=image, headers=AUTH), 413, "payload_too_large")


async def test_no_image_or_code_reaches_spans(router):
    image = b"secret-face-bytes"
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "zed", "face": b64(image)})
    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "zed", "face": b64(image)})
    assert r.status_code == 200
    dumped = " ".join(str(dict(s.attributes or {})) + str(s.events) for s in router.spans.get_finished_spans())
    assert b64(image) not in dumped and "secret-face" not in dumped
    from tests.router.fakes import fake_code

    assert fake_code(image, "1") not in dumped and fake_code(image, "2") not in dumped
