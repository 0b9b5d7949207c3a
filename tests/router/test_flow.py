"""router.flow: enrol, verify and hash through the router (fake pods behind real sockets)."""

from __future__ import annotations

from tests.router.support.fakes import (
    AUTH,
    b64,
    enroll,
    fake_code,
    running_router,
    standard_fakes,
)


async def test_spans_of_a_verification_share_the_returned_trace_id(router):
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "t", "face": b64(b"t")})
    router.spans.clear()
    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "t", "face": b64(b"t")})
    trace_id = r.headers["x-trace-id"]
    spans = [s for s in router.spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    # Spans for hops and timed work only; auth, the arm choice and the replica pick are attributes
    # and events of the spans around them.
    assert sorted(s.name for s in spans) == ["POST /v1/verify", "audit.write", "upstream.hash"]
    server = next(s for s in spans if s.parent is None)
    assert server.attributes["servestack.key_name"] == "client"
    (decide,) = [e for e in server.events if e.name == "feature_flag.evaluation"]
    assert decide.attributes["servestack.arm"] in ("v1", "v2") and decide.attributes["servestack.route"] == "face"
    assert decide.attributes["feature_flag.key"] == "face-v2"
    assert decide.attributes["feature_flag.result.variant"] == decide.attributes["servestack.arm"]
    (upstream,) = [s for s in spans if s.name == "upstream.hash"]
    assert upstream.attributes["servestack.arm"] == decide.attributes["servestack.arm"]
    assert upstream.attributes["server.address"].startswith("http://127.0.0.1:")
    assert all(s.parent is not None for s in spans if s is not server)
    audit = (await router.client.get(f"/v1/audit/{r.json()['audit_id']}", headers=AUTH)).json()
    assert audit["trace_id"] == trace_id


async def test_no_image_or_code_reaches_spans(router):
    image = b"secret-face-bytes"
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "zed", "face": b64(image)})
    r = await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "zed", "face": b64(image)})
    assert r.status_code == 200
    dumped = " ".join(str(dict(s.attributes or {})) + str(s.events) for s in router.spans.get_finished_spans())
    assert b64(image) not in dumped and "secret-face" not in dumped
    from tests.router.support.fakes import fake_code

    assert fake_code(image, "1") not in dumped and fake_code(image, "2") not in dumped


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
