"""Tenants, enrolment, pinning scope, the brute-force throttle and erasure through a real router
(fake pods), on SQLite and PostgreSQL (the ``audit_url`` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, select

from router.auth import hash_key
from router.db import subject_events, templates
from tests.router.support.fakes import b64, fake_code, running_router

KEYS = {  # key -> (name, tenant, scopes)
    "k-acme": ("acme-app", "acme", ["client"]),
    "k-acme-pin": ("acme-ops", "acme", ["client", "pin", "enroll:replace"]),
    "k-globex": ("globex-app", "globex", ["client"]),
}


def h(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def write_tenant_keys(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"keys": [
        {"name": name, "tenant": tenant, "sha256": hash_key(key), "scopes": scopes, "rate_per_s": 10000,
         "burst": 10000} for key, (name, tenant, scopes) in KEYS.items()]}))
    return path


@pytest.fixture
async def router(tmp_path, audit_url):
    async with running_router(tmp_path, keys_file=write_tenant_keys(tmp_path / "tenant-keys.yaml"),
                              audit_url=audit_url, throttle_max_rejects=5) as harness:
        yield harness


def _err(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    return r.json()


async def _enroll(router, key: str, subject: str, image: bytes, **extra) -> object:
    return await router.client.post("/v1/enroll", headers=h(key),
                                     json={"subject_id": subject, "face": b64(image), **extra})


async def _verify(router, key: str, subject: str, image: bytes) -> object:
    return await router.client.post("/v1/verify", headers=h(key), json={"subject_id": subject, "face": b64(image)})


async def test_tenants_do_not_see_each_others_subjects_audit_or_reports(router):
    assert (await _enroll(router, "k-acme", "alice", b"acme-alice")).status_code == 200
    # Same id in another tenant: another subject, not a 409, not an overwrite.
    assert (await _enroll(router, "k-globex", "alice", b"globex-alice")).status_code == 200
    mine = await _verify(router, "k-acme", "alice", b"acme-alice")
    assert mine.json()["decision"] == "accept"
    assert (await _verify(router, "k-globex", "alice", b"acme-alice")).json()["decision"] == "reject"
    audit_id = mine.json()["audit_id"]
    assert (await router.client.get(f"/v1/audit/{audit_id}", headers=h("k-acme"))).json() == mine.json()
    # Another tenant's audit id: the same 404 body as an id that does not exist.
    theirs = await router.client.get(f"/v1/audit/{audit_id}", headers=h("k-globex"))
    unknown = await router.client.get(f"/v1/audit/{'0' * 32}", headers=h("k-globex"))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert theirs.json()["error"]["message"].replace(audit_id, "X") == unknown.json()["error"]["message"].replace(
        "0" * 32, "X")
    _err(await router.client.get(f"/v1/audit/{audit_id}/explanation", headers=h("k-globex")), 404, "not_found")
    stream = h("k-globex", accept="text/event-stream")
    _err(await router.client.get(f"/v1/audit/{audit_id}/explanation", headers=stream), 404, "not_found")
    assert router.fakes.explainer.calls == 0
    _err(await router.client.post(f"/v1/audit/{audit_id}/outcome", json={"genuine": False}, headers=h("k-globex")),
         404, "not_found")  # nor label it
    explained = await router.client.get(f"/v1/audit/{audit_id}/explanation", headers=h("k-acme"))
    assert explained.status_code == 200 and explained.json()["audit_id"] == audit_id
    # Experiment reports count the caller's tenant only: one verification each.
    for key in ("k-acme", "k-globex"):
        report = await router.client.get("/v1/experiments/face-v2", headers=h(key))
        assert report.json()["total"] == 1


async def test_enrolment_over_a_subject_is_409_and_replace_needs_its_scope(router):
    assert (await _enroll(router, "k-acme", "bob", b"bob-1")).status_code == 200
    _err(await _enroll(router, "k-acme", "bob", b"bob-2"), 409, "subject_exists")
    _err(await _enroll(router, "k-acme", "bob", b"bob-2", replace=True), 403, "forbidden")
    assert (await _verify(router, "k-acme", "bob", b"bob-1")).json()["decision"] == "accept"
    r = await _enroll(router, "k-acme-pin", "bob", b"bob-2", replace=True)
    assert r.status_code == 200, r.text
    assert (await _verify(router, "k-acme", "bob", b"bob-1")).json()["decision"] == "reject"
    assert (await _verify(router, "k-acme", "bob", b"bob-2")).json()["decision"] == "accept"
    events = await router.app.state.subjects.events("acme", "bob")
    assert [kind for kind, _ in events] == ["enroll", "replace"]


async def test_pinning_needs_the_pin_scope(router):
    assert (await _enroll(router, "k-acme", "carol", b"carol")).status_code == 200
    for path, body in (("/v1/verify", {"subject_id": "carol", "face": b64(b"carol")}),
                       ("/v1/enroll", {"subject_id": "carol2", "face": b64(b"carol")}),
                       ("/v1/hash", {"modality": "face", "images": [b64(b"carol")]})):
        r = await router.client.post(path, json=body, headers=h("k-acme", **{"X-ServeStack-Arm": "face=v2"}))
        assert "pin" in _err(r, 403, "forbidden")["error"]["message"]
    r = await router.client.post("/v1/verify", json={"subject_id": "carol", "face": b64(b"carol")},
                                 headers=h("k-acme-pin", **{"X-ServeStack-Arm": "face=v2"}))
    assert r.status_code == 200 and r.json()["modalities"][0]["arm"] == "v2"


async def test_the_sixth_reject_in_a_row_is_429_without_a_hasher_call_and_an_accept_resets(router):
    assert (await _enroll(router, "k-acme", "dan", b"dan")).status_code == 200
    for _ in range(3):
        assert (await _verify(router, "k-acme", "dan", b"mallory")).json()["decision"] == "reject"
    assert (await _verify(router, "k-acme", "dan", b"dan")).json()["decision"] == "accept"  # resets
    for _ in range(5):
        assert (await _verify(router, "k-acme", "dan", b"mallory")).json()["decision"] == "reject"
    calls = sum(p.calls for p in router.fakes.pods.values())
    locked = await _verify(router, "k-acme", "dan", b"dan")
    _err(locked, 429, "subject_locked")
    assert 890 <= int(locked.headers["Retry-After"]) <= 900
    assert sum(p.calls for p in router.fakes.pods.values()) == calls  # no engine work
    assert router.metric("servestack_router_subject_locked_total") == 1
    assert [k for k, _ in await router.app.state.subjects.events("acme", "dan")][-1] == "locked"
    # The lock is the subject's in its tenant: the same id elsewhere verifies.
    assert (await _enroll(router, "k-globex", "dan", b"dan")).status_code == 200
    assert (await _verify(router, "k-globex", "dan", b"dan")).json()["decision"] == "accept"


async def test_erasure_removes_every_code_and_the_subject_is_then_404(router, audit_url):
    pin = h("k-acme-pin", **{"X-ServeStack-Arm": "face=v1"})
    r = await router.client.post("/v1/enroll", headers=pin, json={"subject_id": "erin", "face": b64(b"erin"),
                                                                  "fingerprint": b64(b"erin-f")})
    assert r.status_code == 200
    assert (await _enroll(router, "k-globex", "erin", b"erin-globex")).status_code == 200
    verified = await _verify(router, "k-acme", "erin", b"erin")
    r = await router.client.delete("/v1/subjects/erin", headers=h("k-acme"))
    assert r.status_code == 204 and r.content == b""
    _err(await router.client.delete("/v1/subjects/erin", headers=h("k-acme")), 404, "subject_not_found")
    _err(await _verify(router, "k-acme", "erin", b"erin"), 404, "subject_not_found")
    assert (await _verify(router, "k-globex", "erin", b"erin-globex")).json()["decision"] == "accept"
    # No code of the erased subject anywhere in the database; its audit record stays, code-free.
    engine = create_engine(audit_url)
    try:
        with engine.connect() as conn:
            codes = set(conn.execute(select(templates.c.code)).scalars())
            dump = " ".join(str(tuple(row)) for t in ("audit_records", "audit_modalities", "subject_events")
                            for row in conn.exec_driver_sql(f"SELECT * FROM {t}"))
            erase = conn.execute(select(subject_events.c.detail).where(subject_events.c.kind == "erase")).scalar()
    finally:
        engine.dispose()
    erased = {fake_code(b"erin", v) for v in ("1", "2")} | {fake_code(b"erin-f", "1")}
    assert codes == {fake_code(b"erin-globex", v) for v in ("1", "2")}
    assert not any(c in dump for c in erased)
    assert '"templates": 3' in erase
    audit = await router.client.get(f"/v1/audit/{verified.json()['audit_id']}", headers=h("k-acme"))
    assert audit.status_code == 200 and audit.json()["modalities"][0]["distance"] == 0
