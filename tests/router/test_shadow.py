"""Template migration after a verification (router/shadow.py): only genuine matches migrate.

Regression (the impostor attack): migration used to follow the fused decision at the client's own
threshold, so a probe with someone else's face and the subject's fingerprint, sent with
``"threshold": 50``, became the subject's face template on the canary version.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from router.db import templates
from tests.router.support.fakes import (
    ADMIN,
    AUTH,
    FakePod,
    b64,
    fake_code,
    running_router,
    standard_fakes,
    standard_policy,
    two_replica_fakes,
)

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


def _shadow_policy(percent: float) -> dict:
    from tests.router.support.fakes import standard_policy

    policy = standard_policy(100, 0, shadow_percent=percent)
    return policy


async def test_shadow_precision_change_records_bit_and_decision_agreement(tmp_path):
    fakes = standard_fakes()
    # The shadow arm serves the same model version at another precision: 3 bits differ per code.
    fakes.pods["http://face-v2a:8080"] = FakePod("face", "1", precision="int8", flip_bits=3)
    async with running_router(tmp_path, fakes, policy=_shadow_policy(100)) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "gus", "face": b64(b"gus")})
        for _ in range(3):
            r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "gus", "face": b64(b"gus")})
            assert r.json()["modalities"][0]["arm"] == "v1"
        await router.app.state.background.drain()
        labels = {"route": "face", "primary": "v1", "shadow": "v2"}
        assert router.metric("servestack_router_shadow_bits_total", result="differ", **labels) == 9
        assert router.metric("servestack_router_shadow_bits_total", result="agree", **labels) == 3 * 125
        assert router.metric("servestack_router_shadow_comparisons_total", agreement="true", **labels) == 3


async def test_hanging_shadow_does_not_delay_or_fail_the_primary(tmp_path):
    fakes, _ = two_replica_fakes()
    gate = asyncio.Event()
    fakes.pods["http://face-v2a:8080"] = FakePod("face", "2", mode="hang", gate=gate)
    policy = standard_policy(100, 0, shadow_percent=100)
    async with running_router(tmp_path, fakes, policy, shadow_timeout_s=30, shadow_max_inflight=2) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "ann", "face": b64(b"ann")})
        for _ in range(4):
            r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "ann", "face": b64(b"ann")})
            assert r.status_code == 200 and r.json()["decision"] == "accept"
        # The shadow calls are still hanging, the primaries all answered; beyond 2 they were skipped.
        assert router.app.state.background.inflight == 2
        assert router.metric("servestack_router_shadow_skipped_total", route="face", reason="saturated") == 2
        gate.set()
        await router.app.state.background.drain()


async def test_failing_shadow_is_counted_not_surfaced(tmp_path):
    fakes, _ = two_replica_fakes()
    fakes.pods["http://face-v2a:8080"].mode = "fail"
    policy = standard_policy(100, 0, shadow_percent=100)
    async with running_router(tmp_path, fakes, policy, shadow_timeout_s=0.2, template_migration=False) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "ben", "face": b64(b"ben")})
        r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "ben", "face": b64(b"ben")})
        assert r.status_code == 200 and r.json()["modalities"][0]["arm"] == "v1"
        await router.app.state.background.drain()
        assert router.metric("servestack_router_shadow_skipped_total", route="face", reason="failed") == 1
        assert router.metric("servestack_router_shadow_comparisons_total", route="face", primary="v1",
                             shadow="v2", agreement="true") == 0
