"""The Roles grant exactly the verbs the code uses on the policy ConfigMap, on that ConfigMap only.

The router's verbs come from router/kube.py (``VERBS``, itself checked against the HTTP methods the
client sends in tests/router/test_policy_store.py); the canary controller's from the official
client's methods its ConfigMap actuator calls.
"""

from __future__ import annotations

import re
from pathlib import Path

from router.kube import VERBS
from tests.k8s.manifests import REPO, env_map, get, of_kind, pod_spec

# Official-client method prefixes -> Kubernetes verbs.
CLIENT_VERBS = {"read": "get", "list": "list", "patch": "patch", "replace": "update", "create": "create",
                "delete": "delete"}


def configmap_rules(objs: tuple[dict, ...], account: str) -> list[dict]:
    """The rules on configmaps of every Role bound to ``account``."""
    roles = of_kind(objs, "Role")
    names = {b["roleRef"]["name"] for b in of_kind(objs, "RoleBinding").values()
             if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])}
    return [r for n in names for r in roles[n]["rules"] if "configmaps" in r["resources"]]


def test_router_role_grants_the_verbs_of_router_kube_on_its_configmap(objs: tuple[dict, ...]) -> None:
    router = get(objs, "Deployment", "router")
    env = env_map(objs, pod_spec(router)["containers"][0])
    name = env["SERVESTACK_ROUTER_POLICY_CONFIGMAP"]
    get(objs, "ConfigMap", name)
    rules = configmap_rules(objs, pod_spec(router)["serviceAccountName"])
    assert len(rules) == 1
    assert rules[0]["apiGroups"] == [""] and rules[0]["resourceNames"] == [name]
    assert set(rules[0]["verbs"]) == VERBS


def test_canary_role_grants_the_verbs_of_its_configmap_actuator(objs: tuple[dict, ...]) -> None:
    source = Path(REPO / "canary/actuators/configmap.py").read_text()
    used = {CLIENT_VERBS[m] for m in re.findall(r"_api\.(\w+?)_namespaced_config_map", source)}
    assert used == {"get", "patch"}
    rules = configmap_rules(objs, "servestack-canary")
    assert len(rules) == 1 and rules[0]["resourceNames"] == ["router-policy"]
    assert set(rules[0]["verbs"]) == used
