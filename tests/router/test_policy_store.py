"""router.policy_store: hot reload of the policy file under load; versioned policy writes (ETag /
If-Match on the admin API, compare-and-swap in each source).

The ConfigMap source runs against kmock with resourceVersion preconditions
(tests/router/support/kube_api.py); the file source against a real file shared by two holders, as
two replicas share it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from router.errors import VersionConflict
from router.kube import VERBS, KubeClient
from router.policy_sources import Snapshot, SourceConflict
from router.policy_sources.configmap import ConfigMapPolicySource
from router.policy_sources.file import FilePolicySource
from router.policy_store import PolicyHolder, etag_of, matches, parse_document
from tests.router.support.fakes import ADMIN, AUTH, b64, running_router, standard_policy
from tests.router.support.kube_api import ResourceVersionEmulator


async def test_hot_reload_under_load_fails_no_request(tmp_path):
    async with running_router(tmp_path, policy_poll_s=0.01) as router:
        subjects = [f"u{i}" for i in range(20)]
        for s in subjects:
            r = await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": s, "face": b64(s.encode())})
            assert r.status_code == 200
        stop = asyncio.Event()
        statuses: list[int] = []

        async def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                s = subjects[(worker * 7 + i) % len(subjects)]
                body = {"subject_id": s, "face": b64(s.encode())}
                r = await router.client.post("/v1/verify", headers=AUTH, json=body)
                statuses.append(r.status_code)
                i += 1

        workers = [asyncio.create_task(load(w)) for w in range(8)]
        for step in range(10):
            w2 = 10 + step * 9
            if step % 2:
                # A hand edit, bumping the document's version as an operator should.
                router.write_policy({"version": 100 + step, **standard_policy(100 - w2, w2)})
                await asyncio.sleep(0.05)
            else:
                r = await router.client.patch("/admin/v1/routes/face/weights", headers=ADMIN,
                                              json={"weights": {"v1": 100 - w2, "v2": w2}})
                assert r.status_code == 200
            router.policy_path.write_text("routes: [this is: not valid")  # refused, old policy stays
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*workers)
        assert len(statuses) > 50 and set(statuses) == {200}
        assert router.metric("servestack_router_policy_reloads_total", result="invalid") >= 1
        assert router.metric("servestack_router_policy_reloads_total", result="admin") == 5
        assert router.app.state.policy.current.version == 109  # the version comes from the document


def weights(holder: PolicyHolder, route: str = "face") -> dict[str, float]:
    return holder.current.weights(route)


def test_document_version_and_etag() -> None:
    text = yaml.safe_dump({"version": 7, **standard_policy()})
    version, spec = parse_document(text)
    assert version == 7 and "face" in spec.routes
    assert parse_document(yaml.safe_dump(standard_policy()))[0] == 1  # absent: 1
    etag = etag_of(7, text)
    assert etag.startswith("7-") and etag != etag_of(7, text + "\n")  # a hand edit changes the ETag
    assert matches(f'"{etag}"', etag) and matches("*", etag) and matches(f'"x", "{etag}"', etag)
    assert not matches(f"W/\"{etag}\"", etag) and not matches(etag, etag)  # unquoted is no match


async def test_file_source_refuses_a_write_based_on_a_stale_read(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("a: 1\n")
    source = FilePolicySource(path)
    first = await source.read()
    await source.write("a: 2\n", first)
    with pytest.raises(SourceConflict):
        await source.write("a: 3\n", first)
    assert path.read_text() == "a: 2\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".policy-")]  # no temp file left


async def test_two_replicas_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(standard_policy(90, 10)))
    a, b = PolicyHolder(FilePolicySource(path)), PolicyHolder(FilePolicySource(path))
    await a.load()
    await b.load()
    etag = a.etag
    # Without If-Match both writers land, each on the other's result (different routes).
    await asyncio.gather(a.update(lambda s: s.with_weights("face", {"v1": 60, "v2": 40})),
                         b.update(lambda s: s.with_weights("fingerprint", {"v1": 50})))
    version, spec = parse_document(path.read_text())
    assert version == 3
    assert {x.name: x.weight for x in spec.routes["face"].arms} == {"v1": 60, "v2": 40}
    assert spec.routes["fingerprint"].arms[0].weight == 50
    # With the same (now stale) If-Match, neither lands: both read a newer document.
    with pytest.raises(VersionConflict):
        await a.update(lambda s: s.with_weights("face", {"v1": 0, "v2": 100}), f'"{etag}"')
    # Racing with one fresh If-Match: exactly one wins, the other gets 412.
    await b.check()  # whichever wrote last already holds version 3; the other reads it now
    assert b.current.version == 3
    fresh = f'"{b.etag}"'
    results = await asyncio.gather(
        a.update(lambda s: s.with_weights("face", {"v1": 10, "v2": 90}), fresh),
        b.update(lambda s: s.with_weights("face", {"v1": 20, "v2": 80}), fresh),
        return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["TrafficPolicy", "VersionConflict"]
    await a.check()
    await b.check()
    assert a.current.version == b.current.version == 4 and a.etag == b.etag


async def test_admin_api_etag_and_if_match(tmp_path: Path) -> None:
    async with running_router(tmp_path) as router:
        got = await router.client.get("/admin/v1/policy", headers=ADMIN)
        etag = got.headers["etag"]
        assert etag == f'"{got.json()["etag"]}"' and got.json()["version"] == 1
        assert router.metric("servestack_router_policy_version") == 1
        ok = await router.client.patch("/admin/v1/routes/face/weights", json={"weights": {"v1": 70, "v2": 30}},
                                       headers={**ADMIN, "If-Match": etag})
        assert ok.status_code == 200 and ok.headers["etag"] != etag and ok.json()["version"] == 2
        stale = await router.client.put("/admin/v1/policy", json=standard_policy(0, 100),
                                        headers={**ADMIN, "If-Match": etag})
        assert stale.status_code == 412 and stale.json()["error"]["code"] == "version_conflict"
        assert router.app.state.policy.current.weights("face") == {"v1": 70, "v2": 30}  # nothing written
        star = await router.client.put("/admin/v1/policy", json=standard_policy(0, 100),
                                       headers={**ADMIN, "If-Match": "*"})
        assert star.status_code == 200 and star.json()["version"] == 3
        assert router.metric("servestack_router_policy_version") == 3
        assert yaml.safe_load(router.policy_path.read_text())["version"] == 3


CM_NS, CM_NAME = "servestack", "router-policy"


async def make_configmap(kube: KubeClient, kmock, text: str) -> None:
    import httpx
    async with httpx.AsyncClient(base_url=str(kmock.url)) as http:
        r = await http.post(f"/api/v1/namespaces/{CM_NS}/configmaps", json={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM_NAME, "namespace": CM_NS},
            "data": {"policy.yaml": text}})
        assert r.status_code < 300, r.text


@pytest.mark.kmock(cls=ResourceVersionEmulator)
async def test_configmap_source_writes_with_the_resource_version(kmock) -> None:
    kube = KubeClient(str(kmock.url))
    await make_configmap(kube, kmock, yaml.safe_dump(standard_policy(90, 10)))
    source = ConfigMapPolicySource(kube, CM_NS, CM_NAME)
    first = await source.read()
    second = await source.write(first.text.replace("weight: 10", "weight: 20"), first)
    assert second.token != first.token
    with pytest.raises(SourceConflict):  # the API server's 409, from a write based on `first`
        await source.write("x: 1\n", first)
    patches = [r for r in kmock if r.method.value == "PATCH"]
    assert [p.headers["Content-Type"] for p in patches] == ["application/merge-patch+json"] * 2
    assert kmock.sent_versions == [first.token, first.token]
    await kube.aclose()


@pytest.mark.kmock(cls=ResourceVersionEmulator)
async def test_replicas_on_one_configmap_converge_and_lose_no_update(kmock) -> None:
    kube_a, kube_b = KubeClient(str(kmock.url)), KubeClient(str(kmock.url))
    await make_configmap(kube_a, kmock, yaml.safe_dump(standard_policy(90, 10)))
    a = PolicyHolder(ConfigMapPolicySource(kube_a, CM_NS, CM_NAME))
    b = PolicyHolder(ConfigMapPolicySource(kube_b, CM_NS, CM_NAME))
    await a.load()
    await b.load()
    etag = a.etag
    await a.update(lambda s: s.with_weights("face", {"v1": 50, "v2": 50}), f'"{etag}"')
    assert await b.check()  # what every replica's poll does
    assert weights(b) == {"v1": 50, "v2": 50} and b.current.version == a.current.version == 2
    assert b.etag == a.etag
    with pytest.raises(VersionConflict):  # b's operator read before a's write
        await b.update(lambda s: s.with_weights("face", {"v1": 0, "v2": 100}), f'"{etag}"')

    # A kubectl edit lands between b's read and b's write: the 409 makes b re-read and re-apply.
    source_b = b.source
    real_read = source_b.read
    raced = False

    async def read_then_someone_writes() -> Snapshot:
        nonlocal raced
        snap = await real_read()
        if not raced:
            raced = True
            await a.update(lambda s: s.with_weights("fingerprint", {"v1": 40}))
        return snap

    source_b.read = read_then_someone_writes  # type: ignore[method-assign]
    await b.update(lambda s: s.with_weights("face", {"v1": 30, "v2": 70}))
    final = await ConfigMapPolicySource(kube_a, CM_NS, CM_NAME).read()
    version, spec = parse_document(final.text)
    assert version == 4
    assert {x.name: x.weight for x in spec.routes["face"].arms} == {"v1": 30, "v2": 70}
    assert spec.routes["fingerprint"].arms[0].weight == 40  # the concurrent edit survived
    await kube_a.aclose()
    await kube_b.aclose()


def test_the_client_uses_only_the_verbs_it_declares() -> None:
    source = Path("router/kube.py").read_text()
    used = {m.lower() for m in ("GET", "PATCH", "PUT", "POST", "DELETE") if f'"{m}"' in source}
    assert used == {"get", "patch"} == set(VERBS)


@pytest.mark.kmock(cls=ResourceVersionEmulator)
async def test_router_on_the_configmap_source_writes_and_follows_it(kmock, tmp_path: Path) -> None:
    kube = KubeClient(str(kmock.url))
    await make_configmap(kube, kmock, yaml.safe_dump(standard_policy(90, 10)))
    async with running_router(tmp_path, policy_source="configmap", kube_api_url=str(kmock.url),
                              policy_namespace=CM_NS, policy_configmap=CM_NAME, policy_poll_s=0.05) as router:
        got = await router.client.get("/admin/v1/policy", headers=ADMIN)
        assert got.json()["version"] == 1
        r = await router.client.patch("/admin/v1/routes/face/weights", json={"weights": {"v1": 70, "v2": 30}},
                                      headers={**ADMIN, "If-Match": got.headers["etag"]})
        assert r.status_code == 200 and r.json()["version"] == 2
        cm = await kube.get_configmap(CM_NS, CM_NAME)
        version, spec = parse_document(cm.data["policy.yaml"])
        assert version == 2 and {a.name: a.weight for a in spec.routes["face"].arms} == {"v1": 70, "v2": 30}
        assert router.policy_path.read_text() == yaml.safe_dump(router.fakes.resolve(standard_policy()))  # untouched

        # An edit made elsewhere (another replica, the canary, kubectl) is followed within a poll.
        await kube.patch_configmap(CM_NS, CM_NAME, {"policy.yaml": yaml.safe_dump(
            {"version": 3, **standard_policy(20, 80)})}, cm.resource_version)
        for _ in range(100):
            if router.app.state.policy.current.version == 3:
                break
            await asyncio.sleep(0.05)
        assert router.app.state.policy.current.weights("face") == {"v1": 20, "v2": 80}
        assert router.metric("servestack_router_policy_version") == 3
        stale = await router.client.put("/admin/v1/policy", json=standard_policy(), headers={
            **ADMIN, "If-Match": r.headers["etag"]})
        assert stale.status_code == 412
    await kube.aclose()
