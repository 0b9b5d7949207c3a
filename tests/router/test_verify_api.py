"""Enrol/verify/hash/audit through the in-process router with fake pods."""

from __future__ import annotations

from tests.router.fakes import AUTH, FakePod, b64, fake_code, running_router, standard_fakes


async def enroll(router, subject: str, **images: bytes) -> dict:
    r = await router.client.post("/v1/enroll", headers=AUTH,
                                 json={"subject_id": subject, **{k: b64(v) for k, v in images.items()}})
    assert r.status_code == 200, r.text
    return r.json()


async def test_enroll_then_verify_accepts_same_image_and_rejects_another(router):
    body = await enroll(router, "alice", face=b"alice-face", fingerprint=b"alice-finger")
    stored = {(t["modality"], t["model_version"]) for t in body["templates"]}
    assert stored == {("face", "1"), ("face", "2"), ("fingerprint", "1")}  # every weighted arm enrolled

    r = await router.client.post("/v1/verify", headers=AUTH, json={
        "subject_id": "alice", "face": b64(b"alice-face"), "fingerprint": b64(b"alice-finger")})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["decision"] == "accept" and rec["fused_distance"] == 0 and rec["threshold"] == 24
    assert {m["modality"] for m in rec["modalities"]} == {"face", "fingerprint"}
    assert r.headers["x-trace-id"] == rec["trace_id"]
    face = next(m for m in rec["modalities"] if m["modality"] == "face")
    assert face["arm"] in ("v1", "v2") and face["model_version"] == face["arm"][1:]
    assert face["precision"] == "fp32" and face["attempts"] == 1 and face["fallbacks"] == []

    stored_rec = (await router.client.get(f"/v1/audit/{rec['audit_id']}", headers=AUTH)).json()
    assert stored_rec == rec

    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "alice", "face": b64(b"mallory")})
    rec = r.json()
    assert r.status_code == 200 and rec["decision"] == "reject" and rec["fused_distance"] > 24
    assert router.metric("servestack_router_decisions_total", decision="accept") == 1
    assert router.metric("servestack_router_decisions_total", decision="reject") == 1


async def test_fusion_is_the_mean_and_threshold_override_applies(router):
    await enroll(router, "bob", face=b"bob-face", fingerprint=b"bob-finger")
    r = await router.client.post("/v1/verify", headers=AUTH, json={
        "subject_id": "bob", "face": b64(b"bob-face"), "fingerprint": b64(b"someone-else"), "threshold": 50})
    rec = r.json()
    finger = next(m for m in rec["modalities"] if m["modality"] == "fingerprint")
    expected = int(fake_code(b"someone-else", "1"), 16) ^ int(fake_code(b"bob-finger", "1"), 16)
    assert finger["distance"] == expected.bit_count()
    assert rec["fused_distance"] == finger["distance"] / 2
    assert rec["threshold"] == 50
    assert rec["decision"] == ("accept" if finger["distance"] / 2 <= 50 else "reject")


async def test_verify_unknown_subject_is_404(router):
    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "nobody", "face": b64(b"x")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "subject_not_found"


async def test_pin_header_forces_the_arm(router):
    await enroll(router, "carol", face=b"carol")
    for arm in ("v1", "v2", "v1"):
        r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": f"face={arm}"},
                                     json={"subject_id": "carol", "face": b64(b"carol")})
        m = r.json()["modalities"][0]
        assert (m["arm"], m["arm_reason"], m["model_version"]) == (arm, "pinned", arm[1:])
    r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v9"},
                                 json={"subject_id": "carol", "face": b64(b"carol")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_arm"


async def test_hash_endpoint_returns_codes_of_the_serving_version(router):
    r = await router.client.post("/v1/hash", headers={**AUTH, "X-ServeStack-Arm": "face=v2"},
                                 json={"modality": "face", "images": [b64(b"a"), b64(b"b")]})
    body = r.json()
    assert r.status_code == 200
    assert body["codes"] == [fake_code(b"a", "2"), fake_code(b"b", "2")]
    assert (body["arm"], body["backend"], body["model_version"]) == ("v2", "hasher-face-v2", "2")


async def test_template_migration_enrols_the_canary_after_an_accepted_verification(tmp_path):
    async with running_router(tmp_path, enroll_all_arms=False) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "dan", "face": b64(b"dan")})
        assert set((await router.app.state.subjects.load("default", "dan")).templates["face"]) == {"1"}
        # Teach the router which version each backend serves, then an accepted v1 verification.
        await router.client.post("/v1/hash", headers={**AUTH, "X-ServeStack-Arm": "face=v2"},
                                 json={"modality": "face", "images": [b64(b"z")]})
        r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                     json={"subject_id": "dan", "face": b64(b"dan")})
        assert r.json()["decision"] == "accept"
        await router.app.state.background.drain()
        templates = (await router.app.state.subjects.load("default", "dan")).templates["face"]
        assert templates == {"1": fake_code(b"dan", "1"), "2": fake_code(b"dan", "2")}
        assert router.metric("servestack_router_template_migrations_total", route="face", arm="v2",
                             outcome="ok") == 1
        # Now the canary can verify the subject.
        r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v2"},
                                     json={"subject_id": "dan", "face": b64(b"dan")})
        assert r.json()["decision"] == "accept" and r.json()["modalities"][0]["model_version"] == "2"


async def test_coverage_reroutes_to_an_arm_with_a_template(tmp_path):
    fakes = standard_fakes()
    async with running_router(tmp_path, fakes, enroll_all_arms=False, template_migration=False) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "erin", "face": b64(b"erin")})
        # Find a subject-independent way onto v2: patch weights so that every bucket is v2.
        await router.client.patch("/admin/v1/routes/face/weights", headers={"X-API-Key": "sk-test-admin"},
                                  json={"weights": {"v1": 0, "v2": 100}})
        r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "erin", "face": b64(b"erin")})
        m = r.json()["modalities"][0]
        assert r.status_code == 200 and (m["arm"], m["arm_reason"], m["model_version"]) == ("v1", "coverage", "1")


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


def _shadow_policy(percent: float) -> dict:
    from tests.router.fakes import standard_policy

    policy = standard_policy(100, 0, shadow_percent=percent)
    return policy
