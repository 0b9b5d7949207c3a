"""Keys: tenants and scopes in the keys file, and rotation without a restart (KeyRing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from router.auth import Authenticator, KeyRing, Principal, hash_key, load_keys
from router.errors import Forbidden, Unauthorized
from router.ratelimit import RateLimiter
from tests.router.support.fakes import ADMIN_KEY, AUTH, CLIENT_KEY, LIMITED_KEY, assert_error, b64, running_router


def _keys(path: Path, *entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"keys": list(entries)}))
    return path


def _key(name: str, key: str, scopes: list[str], tenant: str | None = None) -> dict:
    entry = {"name": name, "sha256": hash_key(key), "scopes": scopes, "rate_per_s": 1000, "burst": 1000}
    return entry | ({"tenant": tenant} if tenant else {})


def test_tenant_defaults_to_default_and_a_key_holds_exactly_its_scopes(tmp_path):
    ring = KeyRing(_keys(tmp_path / "k.yaml", _key("a", "ka", ["client"]), _key("b", "kb", ["admin"], "acme"),
                         _key("c", "kc", ["client", "pin"], "acme")))
    auth = Authenticator(ring, RateLimiter())
    a = auth.authenticate("ka", "client")
    assert (a.name, a.tenant, a.allows("pin"), a.allows("enroll:replace")) == ("a", "default", False, False)
    b = auth.authenticate("kb", "admin")
    assert (b.tenant, b.allows("pin"), b.allows("client")) == ("acme", False, False)
    with pytest.raises(Forbidden):
        auth.authenticate("kb", "client")
    assert auth.authenticate("kc", "client").allows("pin")
    with pytest.raises(Forbidden, match="'pin' scope needed to pin an arm"):
        a.require("pin", "pin an arm")
    with pytest.raises(Forbidden):
        auth.authenticate("ka", "admin")


@pytest.mark.parametrize("bad", [
    {"name": "x", "sha256": "0" * 64, "scopes": ["root"]},
    {"name": "x", "sha256": "0" * 64, "scopes": ["client"], "tenant": "Has Spaces"},
])
def test_unknown_scopes_and_bad_tenants_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="keys file"):
        load_keys(_keys(tmp_path / "k.yaml", bad))


def test_keyring_reloads_on_change_and_refuses_a_bad_file_keeping_the_last_good_one(tmp_path):
    results: list[str] = []
    path = _keys(tmp_path / "k.yaml", _key("a", "ka", ["client"]))
    ring = KeyRing(path, on_reload_result=results.append)
    assert not ring.check_file()  # unchanged
    _keys(path, _key("a", "ka", ["client"]), _key("b", "kb", ["client"], "acme"))
    assert ring.check_file() and set(ring.keys) == {hash_key("ka"), hash_key("kb")}
    path.write_text("keys: [{name: broken")  # not YAML: refused, the two keys stay
    assert not ring.check_file() and set(ring.keys) == {hash_key("ka"), hash_key("kb")}
    path.unlink()  # a missing file (mid-swap) changes nothing
    assert not ring.check_file() and len(ring.keys) == 2
    _keys(path, _key("b", "kb", ["client"], "acme"))
    assert ring.check_file() and set(ring.keys) == {hash_key("kb")}
    assert results == ["file", "invalid", "file"]


async def test_revoked_key_is_refused_within_seconds_and_requests_in_flight_finish(tmp_path):
    async with running_router(tmp_path, keys_poll_s=0.2) as router:
        keys_path = tmp_path / "keys.yaml"
        face = router.fakes.pods["http://face-v1a:8080"]
        face.mode, face.gate = "hang", asyncio.Event()
        body = {"modality": "face", "images": [b64(b"x")]}
        pin = {**AUTH, "X-ServeStack-Arm": "face=v1"}
        in_flight = asyncio.create_task(router.client.post("/v1/hash", json=body, headers=pin))
        while face.calls == 0:
            await asyncio.sleep(0.01)
        # Revoke the client key: the file now holds only another key.
        entries = yaml.safe_load(keys_path.read_text())["keys"]
        _keys(keys_path, *[e for e in entries if e["sha256"] != hash_key(CLIENT_KEY)])
        revoked_at = time.monotonic()
        finger = {"modality": "fingerprint", "images": [b64(b"y")]}  # not the hanging pod
        while (await router.client.post("/v1/hash", json=finger, headers=AUTH)).status_code != 401:
            assert time.monotonic() - revoked_at < 5, "revoked key still accepted after 5 s"
            await asyncio.sleep(0.05)
        face.gate.set()
        done = await in_flight
        assert done.status_code == 200, done.text
        assert router.metric("servestack_router_keys_reloads_total", result="file") == 1
        # A broken file is refused; the keys in force stay.
        keys_path.write_text("keys: nope")
        while router.metric("servestack_router_keys_reloads_total", result="invalid") < 1:
            await asyncio.sleep(0.05)
        admin = await router.client.get("/admin/v1/policy", headers={"X-API-Key": "sk-test-admin"})
        assert admin.status_code == 200
        r = await router.client.post("/v1/hash", json=finger, headers=AUTH)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_disabled_auth_is_one_anonymous_principal_of_the_default_tenant():
    p = Authenticator(None, RateLimiter()).authenticate(None, "admin")
    assert p == Principal("anonymous", frozenset({"client", "pin", "enroll:replace", "admin"}), "default")


def test_a_missing_key_is_401_when_auth_is_on(tmp_path):
    ring = KeyRing(_keys(tmp_path / "k.yaml", _key("a", "ka", ["client"])))
    with pytest.raises(Unauthorized, match="missing API key"):
        Authenticator(ring, RateLimiter()).authenticate(None, "client")


def test_local_stack_keys_share_one_tenant_and_only_the_admin_may_pin(tmp_path):
    from servestack.local_config import LOCAL_TENANT, write_keys

    path, client_key, admin_key = write_keys(tmp_path)
    auth = Authenticator(KeyRing(path), RateLimiter())
    client, admin = auth.authenticate(client_key, "client"), auth.authenticate(admin_key, "admin")
    assert client.tenant == admin.tenant == LOCAL_TENANT == "local"
    assert not client.allows("pin") and not client.allows("enroll:replace")
    assert admin.allows("pin") and admin.allows("enroll:replace")


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
