"""router.auth: API keys (hashed), scopes and the per-key rate limit."""

from __future__ import annotations

from router.auth import hash_key
from tests.router.support.fakes import ADMIN_KEY, AUTH, LIMITED_KEY, assert_error, b64


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_missing_wrong_and_underscoped_keys(router):
    body = {"modality": "face", "images": [b64(b"x")]}
    assert_error(await router.client.post("/v1/hash", json=body), 401, "unauthorized")
    assert_error(await router.client.post("/v1/hash", json=body, headers={"Authorization": "Bearer nope"}), 401,
         "unauthorized")
    assert_error(await router.client.get("/admin/v1/policy", headers=AUTH), 403, "forbidden")
    ok = await router.client.get("/admin/v1/policy", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and ok.json()["version"] == 1


async def test_rate_limit_gives_429_with_retry_after(router):
    headers = {"X-API-Key": LIMITED_KEY}
    body = {"modality": "face", "images": [b64(b"x")]}
    statuses = [(await router.client.post("/v1/hash", json=body, headers=headers)).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]  # burst 2, 0.5/s
    r = await router.client.post("/v1/hash", json=body, headers=headers)
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert router.metric("servestack_router_rate_limited_total", key="limited") == 3
    # Another key is not affected.
    assert (await router.client.post("/v1/hash", json=body, headers=AUTH)).status_code == 200
