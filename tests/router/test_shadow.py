"""router.shadow: shadow comparison and template migration, off the response path."""

from __future__ import annotations

import asyncio

from tests.router.support.fakes import (
    AUTH,
    FakePod,
    b64,
    fake_code,
    running_router,
    standard_fakes,
    standard_policy,
    two_replica_fakes,
)


def _shadow_policy(percent: float) -> dict:
    from tests.router.support.fakes import standard_policy

    policy = standard_policy(100, 0, shadow_percent=percent)
    return policy


async def test_template_migration_enrols_the_canary_after_an_accepted_verification(tmp_path):
    async with running_router(tmp_path, enroll_all_arms=False) as router:
        await router.client.post("/v1/enroll", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                 json={"subject_id": "dan", "face": b64(b"dan")})
        assert set(await router.app.state.templates.get("dan", "face")) == {"1"}
        # Teach the router which version each backend serves, then an accepted v1 verification.
        await router.client.post("/v1/hash", headers={**AUTH, "X-ServeStack-Arm": "face=v2"},
                                 json={"modality": "face", "images": [b64(b"z")]})
        r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v1"},
                                     json={"subject_id": "dan", "face": b64(b"dan")})
        assert r.json()["decision"] == "accept"
        await router.app.state.background.drain()
        templates = await router.app.state.templates.get("dan", "face")
        assert templates == {"1": fake_code(b"dan", "1"), "2": fake_code(b"dan", "2")}
        assert router.metric("servestack_router_template_migrations_total", route="face", arm="v2",
                             outcome="ok") == 1
        # Now the canary can verify the subject.
        r = await router.client.post("/v1/verify", headers={**AUTH, "X-ServeStack-Arm": "face=v2"},
                                     json={"subject_id": "dan", "face": b64(b"dan")})
        assert r.json()["decision"] == "accept" and r.json()["modalities"][0]["model_version"] == "2"


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
