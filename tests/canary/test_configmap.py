"""ConfigMap actuation with the official client against kmock, and the patch body through kubectl.

No kube-apiserver can be installed here: kmock (PyPI) emulates the API for the official client
(no validation, no defaulting, plain dict merging), so the second test feeds the very body we
send to ``kubectl patch --local --type merge`` (offline) to prove kubectl takes it and yields a
policy the router's own model accepts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from canary.actuators import ActuatorError
from canary.actuators.configmap import ConfigMapActuator, policy_patch
from router.policy_store import parse_policy
from tests.router.support.kube_api import ResourceVersionEmulator

POLICY = {
    "backends": {
        "hasher-face-v1": {"endpoints": ["http://hasher-face-v1:8080"], "fallback": []},
        "hasher-face-v2": {"endpoints": ["http://hasher-face-v2:8080"], "fallback": ["hasher-face-v1"]},
    },
    "routes": {"face": {"experiment": "face-v2", "arms": [
        {"name": "v1", "backend": "hasher-face-v1", "weight": 90},
        {"name": "v2", "backend": "hasher-face-v2", "weight": 10},
    ], "shadow": {"arm": "v2", "percent": 10}}},
}


def configmap_manifest(namespace: str = "servestack") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "router-policy", "namespace": namespace},
            "data": {"policy.yaml": yaml.safe_dump(POLICY, sort_keys=False)}}


def core_api(url: str) -> k8s.CoreV1Api:
    cfg = k8s.Configuration(host=url.rstrip("/"))
    return k8s.CoreV1Api(k8s.ApiClient(cfg))


async def test_weights_are_patched_into_the_configmap(kmock) -> None:
    api = core_api(str(kmock.url))
    await asyncio.to_thread(api.create_namespaced_config_map, "servestack", configmap_manifest())
    act = ConfigMapActuator(api, "servestack")
    assert await act.get_weights("face") == {"v1": 90.0, "v2": 10.0}

    await act.set_weights("face", {"v1": 60, "v2": 40})

    cm = await asyncio.to_thread(api.read_namespaced_config_map, "router-policy", "servestack")
    spec = parse_policy(cm.data["policy.yaml"])  # what every router will hot-reload
    assert {a.name: a.weight for a in spec.routes["face"].arms} == {"v1": 60.0, "v2": 40.0}
    assert spec.routes["face"].shadow is not None and spec.routes["face"].shadow.percent == 10  # rest kept
    assert await act.get_weights("face") == {"v1": 60.0, "v2": 40.0}
    patches = [r for r in kmock if r.method.value == "PATCH"]
    assert len(patches) == 1
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"


async def test_unknown_arm_is_refused_before_anything_is_written(kmock) -> None:
    api = core_api(str(kmock.url))
    await asyncio.to_thread(api.create_namespaced_config_map, "servestack", configmap_manifest())
    with pytest.raises(ActuatorError, match="no arm"):
        await ConfigMapActuator(api, "servestack").set_weights("face", {"v3": 50})
    assert not [r for r in kmock if r.method.value == "PATCH"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_accepts_the_patch_body(tmp_path: Path) -> None:
    manifest = configmap_manifest()
    manifest["metadata"]["resourceVersion"] = "41"
    path = tmp_path / "cm.json"
    path.write_text(json.dumps(manifest))
    body = policy_patch(manifest["data"]["policy.yaml"], "face", {"v1": 0, "v2": 100}, resource_version="41")
    out = subprocess.run(
        ["kubectl", "patch", "--local", "-f", str(path), "--type", "merge", "-p", json.dumps(body), "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    patched = json.loads(out.stdout)
    assert patched["kind"] == "ConfigMap" and patched["metadata"]["name"] == "router-policy"
    spec = parse_policy(patched["data"]["policy.yaml"])
    assert {a.name: a.weight for a in spec.routes["face"].arms} == {"v1": 0.0, "v2": 100.0}
    assert set(patched["data"]) == {"policy.yaml"}


@pytest.mark.kmock(cls=ResourceVersionEmulator)
async def test_a_concurrent_edit_is_retried_over_or_refused_never_lost(kmock) -> None:
    api = core_api(str(kmock.url))
    await asyncio.to_thread(api.create_namespaced_config_map, "servestack", configmap_manifest())
    act = ConfigMapActuator(api, "servestack")
    other = ConfigMapActuator(core_api(str(kmock.url)), "servestack")
    assert await act.get_weights("face") == {"v1": 90.0, "v2": 10.0}

    # Another writer changes the shadow between our read and our patch: 409, read again, retry.
    real_read = act._read
    raced = []

    def read_then_race() -> tuple[str, str | None]:
        got = real_read()
        if not raced:
            raced.append(True)
            text = yaml.safe_load(got[0])
            text["routes"]["face"]["shadow"]["percent"] = 50
            api.patch_namespaced_config_map("router-policy", "servestack",
                                            {"data": {"policy.yaml": yaml.safe_dump(text)}},
                                            _content_type="application/merge-patch+json")
        return got

    act._read = read_then_race  # type: ignore[method-assign]
    await act.set_weights("face", {"v1": 70, "v2": 30})
    spec = parse_policy((await asyncio.to_thread(api.read_namespaced_config_map, "router-policy", "servestack"))
                        .data["policy.yaml"])
    assert {a.name: a.weight for a in spec.routes["face"].arms} == {"v1": 70.0, "v2": 30.0}
    assert spec.routes["face"].shadow is not None and spec.routes["face"].shadow.percent == 50  # kept
    assert kmock.sent_versions.count(None) == 1  # only the racing writer sent no resourceVersion

    # An operator moves the canary's own arms: the next step refuses instead of reverting them.
    await other.set_weights("face", {"v1": 100, "v2": 0})
    with pytest.raises(ActuatorError, match="changed by another writer"):
        await act.set_weights("face", {"v1": 50, "v2": 50})
    assert await other.get_weights("face") == {"v1": 100.0, "v2": 0.0}
