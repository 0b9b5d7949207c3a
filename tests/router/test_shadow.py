"""Template migration after a verification (router/shadow.py): only genuine matches migrate.

Regression (the impostor attack): migration used to follow the fused decision at the client's own
threshold, so a probe with someone else's face and the subject's fingerprint, sent with
``"threshold": 50``, became the subject's face template on the canary version.
"""

from __future__ import annotations

from sqlalchemy import select

from router.db import templates
from tests.router.fakes import ADMIN, FakePod, b64, fake_code, running_router, standard_fakes, standard_policy

PIN_V1 = {**ADMIN, "X-ServeStack-Arm": "face=v1"}


async def _enrolled_on_v1_only(router, subject: str, face: bytes, finger: bytes) -> None:
    r = await router.client.post("/v1/enroll", headers=PIN_V1, json={
        "subject_id": subject, "face": b64(face), "fingerprint": b64(finger)})
    assert r.status_code == 200, r.text
    # The router learns which version face v2's backend serves (what a migration looks for).
    await router.client.post("/v1/hash", headers={**ADMIN, "X-ServeStack-Arm": "face=v2"},
                             json={"modality": "face", "images": [b64(b"probe")]})


async def _face_rows(router, subject: str) -> dict[str, tuple[str, str, str | None]]:
    def op(conn):
        t = templates
        rows = conn.execute(select(t.c.model_version, t.c.code, t.c.source, t.c.audit_id)
                            .where(t.c.subject_id == subject, t.c.modality == "face"))
        return {r.model_version: (r.code, r.source, r.audit_id) for r in rows}

    return await router.app.state.db.read(op)


async def test_an_impostor_face_accepted_by_fusion_writes_no_template_a_genuine_one_does(tmp_path):
    async with running_router(tmp_path, enroll_all_arms=False) as router:
        await _enrolled_on_v1_only(router, "vic", b"vic-face", b"vic-finger")
        attack = await router.client.post("/v1/verify", headers=PIN_V1, json={
            "subject_id": "vic", "face": b64(b"mallory-face"), "fingerprint": b64(b"vic-finger"), "threshold": 50})
        body = attack.json()
        face = next(m for m in body["modalities"] if m["modality"] == "face")
        assert body["decision"] == "accept" and face["distance"] > 50  # fusion let the far-off face through
        await router.app.state.background.drain()
        assert set(await _face_rows(router, "vic")) == {"1"}
        assert router.metric("servestack_router_template_migrations_total", route="face", arm="v2",
                             outcome="ok") == 0

        genuine = await router.client.post("/v1/verify", headers=PIN_V1, json={
            "subject_id": "vic", "face": b64(b"vic-face")})
        assert genuine.json()["decision"] == "accept"
        await router.app.state.background.drain()
        rows = await _face_rows(router, "vic")
        assert rows["2"] == (fake_code(b"vic-face", "2"), "migration", genuine.json()["audit_id"])


async def test_the_migration_threshold_is_the_servers_never_the_clients(tmp_path):
    async with running_router(tmp_path, enroll_all_arms=False, migration_threshold=10) as router:
        await _enrolled_on_v1_only(router, "wes", b"wes-face", b"wes-finger")
        router.fakes.pods["http://face-v1a:8080"].flip_bits = 20  # a genuine capture 20 bits off
        r = await router.client.post("/v1/verify", headers=PIN_V1, json={
            "subject_id": "wes", "face": b64(b"wes-face"), "threshold": 40})
        assert r.json()["decision"] == "accept" and r.json()["modalities"][0]["distance"] == 20
        await router.app.state.background.drain()
        assert set(await _face_rows(router, "wes")) == {"1"}  # 20 > 10: not migrated
        router.fakes.pods["http://face-v1a:8080"].flip_bits = 8
        r = await router.client.post("/v1/verify", headers=PIN_V1, json={"subject_id": "wes", "face": b64(b"wes-face")})
        assert r.json()["modalities"][0]["distance"] == 8
        await router.app.state.background.drain()
        assert set(await _face_rows(router, "wes")) == {"1", "2"}


async def test_a_probe_served_by_a_fallback_is_not_migrated(tmp_path):
    fakes = standard_fakes()
    fakes.pods["http://face-v1b:8080"] = FakePod("face", "1", precision="int8")
    policy = standard_policy()
    policy["backends"]["hasher-face-v1b"] = {"endpoints": ["http://face-v1b:8080"]}
    policy["backends"]["hasher-face-v1"]["fallback"] = ["hasher-face-v1b"]
    async with running_router(tmp_path, fakes=fakes, policy=policy, enroll_all_arms=False, max_retries=0) as router:
        await _enrolled_on_v1_only(router, "xia", b"xia-face", b"xia-finger")
        # v1's one try fails (no retries) and falls back to another backend of version 1: the probe
        # matches, but the arm it was sent to did not serve it, so it vouches for no v2 template.
        fakes.pods["http://face-v1a:8080"].fail_next = 1
        r = await router.client.post("/v1/verify", headers=PIN_V1, json={"subject_id": "xia", "face": b64(b"xia-face")})
        assert r.status_code == 200, r.text
        m = r.json()["modalities"][0]
        assert r.json()["decision"] == "accept" and m["fallbacks"] == ["hasher-face-v1"], m
        await router.app.state.background.drain()
        assert set(await _face_rows(router, "xia")) == {"1"}
        # The same probe served by its own arm migrates.
        r = await router.client.post("/v1/verify", headers=PIN_V1, json={"subject_id": "xia", "face": b64(b"xia-face")})
        assert r.json()["modalities"][0]["fallbacks"] == []
        await router.app.state.background.drain()
        assert set(await _face_rows(router, "xia")) == {"1", "2"}
