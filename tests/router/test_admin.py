"""router.admin: reading and changing the traffic policy over the admin API."""

from __future__ import annotations

import yaml

from tests.router.support.fakes import ADMIN, standard_policy


async def test_admin_get_put_patch(router):
    r = await router.client.get("/admin/v1/policy", headers=ADMIN)
    assert r.json()["policy"]["routes"]["face"]["arms"][1]["weight"] == 10
    r = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN,
                                  json={"weights": {"v1": 70, "v2": 30}})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert router.metric("servestack_router_policy_weight", route="face", arm="v2") == 30
    on_disk = yaml.safe_load(router.policy_path.read_text())
    assert [a["weight"] for a in on_disk["routes"]["face"]["arms"]] == [70, 30]  # persisted
    bad = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN, json={"weights": {"v9": 1}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "policy_invalid"
    missing = await router.client.patch("/admin/v1/routes/iris/weights", headers=ADMIN, json={"weights": {"v1": 1}})
    assert missing.status_code == 404
    data = standard_policy(50, 50)
    r = await router.client.put("/admin/v1/policy", headers=ADMIN, json=data)
    assert r.status_code == 200 and r.json()["version"] == 3
    data["routes"]["face"]["arms"][0]["backend"] = "ghost"
    r = await router.client.put("/admin/v1/policy", headers=ADMIN, json=data)
    assert r.status_code == 422 and "ghost" in r.json()["error"]["message"]
    assert router.app.state.policy.current.version == 3
