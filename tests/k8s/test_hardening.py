"""Security context, resources, NetworkPolicy reachability, RBAC, tracing wiring, GPU placement."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import (
    K8S,
    NAMESPACE,
    all_containers,
    component_of,
    env_map,
    get,
    label_selector_matches,
    of_kind,
    pod_labels,
    pod_spec,
    workloads,
)

SAFE_VOLUMES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI"}
# Created by the operator (k8s/README.md), never committed: name -> keys the pods read.
OPERATOR_SECRETS = {"servestack-api-keys": {"keys.yaml"}, "servestack-audit-db": {"url", "postgres-password"},
                    "servestack-tls": set()}


def test_pods_meet_the_restricted_pod_security_standard(objs: tuple[dict, ...]) -> None:
    for workload in workloads(objs):
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= SAFE_VOLUMES, f"{name}: volume {volume}"
        writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in all_containers(workload):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert not sc.get("privileged"), where
            # A read-only root needs a writable /tmp (Python, pip caches, vLLM, torch).
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in writable, f"{where}: no writable /tmp"
            res = container["resources"]
            for r in ("cpu", "memory"):
                assert r in res["requests"] and r in res["limits"], f"{where}: {r} requests+limits"


def test_only_api_clients_carry_a_service_account_token(objs: tuple[dict, ...]) -> None:
    accounts = of_kind(objs, "ServiceAccount")
    for workload in workloads(objs):
        spec, name = pod_spec(workload), workload["metadata"]["name"]
        assert spec["serviceAccountName"] in accounts, name
        expected = name == "router"
        assert spec["automountServiceAccountToken"] is expected, name
        assert spec["serviceAccountName"] == ("servestack-router" if expected else "servestack-workload"), name


def test_rbac_is_least_privilege(objs: tuple[dict, ...]) -> None:
    assert not of_kind(objs, "ClusterRole") and not of_kind(objs, "ClusterRoleBinding")
    rules = {name: role["rules"] for name, role in of_kind(objs, "Role").items()}
    assert rules == {
        "servestack-endpointslice-reader": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}],
        "servestack-router-policy": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["router-policy"],
             "verbs": ["get", "patch"]}],
        "servestack-canary-policy-editor": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["router-policy"],
             "verbs": ["get", "patch"]}],
    }
    get(objs, "ConfigMap", "router-policy")  # the name the canary Role grants must exist unhashed
    bound = {(b["roleRef"]["name"], s["name"]) for b in of_kind(objs, "RoleBinding").values() for s in b["subjects"]}
    assert bound == {("servestack-endpointslice-reader", "servestack-router"),
                     ("servestack-router-policy", "servestack-router"),
                     ("servestack-canary-policy-editor", "servestack-canary")}


def test_referenced_configmaps_and_secrets_exist_or_are_documented(objs: tuple[dict, ...]) -> None:
    configmaps = set(of_kind(objs, "ConfigMap"))
    readme = (K8S / "README.md").read_text()
    used_secrets: dict[str, set[str]] = {}
    for workload in workloads(objs):
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
            if "secret" in volume:
                keys = {i["key"] for i in volume["secret"].get("items", [])}
                used_secrets.setdefault(volume["secret"]["secretName"], set()).update(keys)
        for container in all_containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used_secrets.setdefault(ref["name"], set()).add(ref["key"])
    for ingress in of_kind(objs, "Ingress").values():
        for tls in ingress["spec"].get("tls", []):
            used_secrets.setdefault(tls["secretName"], set())
    assert used_secrets == OPERATOR_SECRETS
    for name, keys in used_secrets.items():
        assert name in readme and all(k in readme for k in keys), f"k8s/README.md must say how to create {name}"


# --- NetworkPolicy reachability -------------------------------------------------------------------

MONITORING = "monitoring"


def _allowed(objs: tuple[dict, ...], src: tuple[str, dict], dst: tuple[str, dict], port: int) -> bool:
    """Whether the namespace's NetworkPolicies admit TCP src -> dst:port (both directions checked).

    ``src``/``dst`` are (namespace, pod labels). Policies live in our namespace only, so traffic
    between two pods outside it is not modelled.
    """
    policies = list(of_kind(objs, "NetworkPolicy").values())

    def peer_ok(peer: dict, ns: str, labels: dict) -> bool:
        if "ipBlock" in peer:
            return False  # pods are not matched by ipBlock rules in this model
        ns_sel = peer.get("namespaceSelector")
        if ns_sel is None and ns != NAMESPACE:
            return False
        if ns_sel is not None and not label_selector_matches(ns_sel, {"kubernetes.io/metadata.name": ns}):
            return False
        return label_selector_matches(peer.get("podSelector", {}), labels)

    def direction_ok(direction: str, own: tuple[str, dict], other: tuple[str, dict]) -> bool:
        if own[0] != NAMESPACE:
            return True
        selecting = [p for p in policies if direction.capitalize() in p["spec"]["policyTypes"]
                     and label_selector_matches(p["spec"]["podSelector"], own[1])]
        if not selecting:
            return True
        key, peers_key = (direction, "from" if direction == "ingress" else "to")
        for p in selecting:
            for rule in p["spec"].get(key, []):
                ports = [x["port"] for x in rule.get("ports", [])]
                if ports and port not in ports:
                    continue
                if any(peer_ok(peer, *other) for peer in rule.get(peers_key, [])):
                    return True
        return False

    return direction_ok("egress", src, dst) and direction_ok("ingress", dst, src)


def _labels(objs: tuple[dict, ...], name: str) -> tuple[str, dict]:
    kinds = {**of_kind(objs, "Deployment"), **of_kind(objs, "StatefulSet")}
    return (NAMESPACE, pod_labels(kinds[name]))


def _port(objs: tuple[dict, ...], name: str) -> int:
    kinds = {**of_kind(objs, "Deployment"), **of_kind(objs, "StatefulSet")}
    return pod_spec(kinds[name])["containers"][0]["ports"][0]["containerPort"]


def _grpc_port(objs: tuple[dict, ...], name: str) -> int:
    ports = pod_spec(of_kind(objs, "Deployment")[name])["containers"][0]["ports"]
    return next(p["containerPort"] for p in ports if p["name"] == "grpc")


PROMETHEUS = (MONITORING, {"app.kubernetes.io/name": "prometheus"})
INGRESS = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
HASHERS = ("hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1")


def test_networkpolicies_allow_the_design_hops(objs: tuple[dict, ...]) -> None:
    lab = lambda n: _labels(objs, n)  # noqa: E731
    assert _allowed(objs, INGRESS, lab("router"), _port(objs, "router"))
    for hasher in HASHERS:
        assert _allowed(objs, lab("router"), lab(hasher), _port(objs, hasher)), hasher
    assert _allowed(objs, lab("router"), lab("explainer"), _port(objs, "explainer"))
    assert _allowed(objs, lab("router"), lab("postgresql"), 5432)
    for name in ("router", "explainer", *HASHERS):
        assert _allowed(objs, PROMETHEUS, lab(name), _port(objs, name)), f"prometheus -> {name}"
        assert _allowed(objs, lab(name), lab("jaeger"), 4318), f"{name} -> jaeger"
        assert _allowed(objs, lab(name), ("kube-system", {"k8s-app": "kube-dns"}), 53), f"{name} -> dns"
    canary = (NAMESPACE, {"app.kubernetes.io/component": "canary-controller"})
    assert _allowed(objs, canary, (MONITORING, {"app.kubernetes.io/name": "prometheus"}), 9090)
    oip_client = (NAMESPACE, {"app": "triton-user", "servestack.io/oip-grpc-client": "true"})
    for hasher in HASHERS:
        assert _allowed(objs, oip_client, lab(hasher), _grpc_port(objs, hasher)), f"gRPC client -> {hasher}"


def test_networkpolicies_deny_everything_else(objs: tuple[dict, ...]) -> None:
    lab = lambda n: _labels(objs, n)  # noqa: E731
    denied = [
        (INGRESS, lab("hasher-face-v1"), 8080), (INGRESS, lab("explainer"), 8200),
        (INGRESS, lab("postgresql"), 5432), (INGRESS, lab("router"), 9999),
        (lab("hasher-face-v1"), lab("explainer"), 8200), (lab("hasher-face-v1"), lab("postgresql"), 5432),
        (lab("explainer"), lab("postgresql"), 5432), (lab("explainer"), lab("hasher-face-v1"), 8080),
        (lab("hasher-face-v1"), lab("router"), 8000), (lab("jaeger"), lab("router"), 8000),
        (("default", {"app": "anything"}), lab("router"), 8000),
        (PROMETHEUS, lab("postgresql"), 5432),
        # gRPC only from labelled clients, and a label opens the gRPC port only.
        (INGRESS, lab("hasher-face-v1"), 8081), (lab("router"), lab("hasher-face-v1"), 8081),
        ((NAMESPACE, {"app": "anything"}), lab("hasher-face-v1"), 8081),
        ((NAMESPACE, {"servestack.io/oip-grpc-client": "true"}), lab("hasher-face-v1"), 8080),
        ((NAMESPACE, {"servestack.io/oip-grpc-client": "true"}), lab("explainer"), 8200),
    ]
    for src, dst, port in denied:
        assert not _allowed(objs, src, dst, port), f"{src} -> {dst}:{port} should be denied"


# --- tracing and metrics wiring ---------------------------------------------------------------------

def test_every_component_exports_traces_to_jaeger_with_k8s_attributes(objs: tuple[dict, ...]) -> None:
    jaeger = get(objs, "Service", "jaeger")
    jaeger_ports = {p["port"] for p in jaeger["spec"]["ports"]}
    assert {4317, 4318} <= jaeger_ports
    jaeger_config = get(objs, "ConfigMap", next(n for n in of_kind(objs, "ConfigMap") if n.startswith("jaeger-config")))
    assert "0.0.0.0:4317" in jaeger_config["data"]["config.yaml"]
    assert "0.0.0.0:4318" in jaeger_config["data"]["config.yaml"]
    services = set()
    for workload in workloads(objs):
        for container in pod_spec(workload)["containers"]:
            if component_of(container) is None:
                continue
            env = env_map(objs, container)
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
            assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
            assert env["OTEL_TRACES_SAMPLER"].startswith("parentbased_")
            services.add(env["OTEL_SERVICE_NAME"])
            assert env["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            assert env["K8S_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
            assert env["K8S_NAMESPACE_NAME"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert services == {"servestack-router", "servestack-hasher", "servestack-explainer"}


# --- placement per overlay --------------------------------------------------------------------------

def _gpu(container: dict) -> tuple[str | None, str | None]:
    res = container["resources"]
    return res["requests"].get("nvidia.com/gpu"), res["limits"].get("nvidia.com/gpu")


def test_gpu_overlay_puts_hashers_and_explainer_on_gpus() -> None:
    from tests.k8s.manifests import render

    objs = render("gpu")
    for workload in workloads(objs):
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        on_gpu = name.startswith("hasher-") or name == "explainer"
        for container in spec["containers"]:
            assert _gpu(container) == (("1", "1") if on_gpu else (None, None)), name
        if on_gpu:
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        else:
            assert "nodeSelector" not in spec and "tolerations" not in spec, name
    engine = get(objs, "ConfigMap", next(n for n in of_kind(objs, "ConfigMap") if n.startswith("hasher-engine")))
    assert engine["data"]["SERVESTACK_HASHER_BACKEND"] == "tensorrt"
    explainer = pod_spec(get(objs, "Deployment", "explainer"))
    shm = next(v for v in explainer["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    images = {c["image"] for w in workloads(objs) for c in pod_spec(w)["containers"]}
    assert any("gpu-hasher" in i for i in images) and any("gpu-explainer" in i for i in images)


def test_cpu_overlay_requests_no_gpu() -> None:
    from tests.k8s.manifests import render

    objs = render("cpu")
    for workload in workloads(objs):
        spec = pod_spec(workload)
        assert "nodeSelector" not in spec and "tolerations" not in spec
        for container in all_containers(workload):
            assert _gpu(container) == (None, None)
    engine = get(objs, "ConfigMap", next(n for n in of_kind(objs, "ConfigMap") if n.startswith("hasher-engine")))
    assert engine["data"]["SERVESTACK_HASHER_BACKEND"] == "openvino"
    # The hasher engine threads fit the CPU limit: no oversubscription of a Guaranteed pod.
    hasher = pod_spec(get(objs, "Deployment", "hasher-face-v1"))["containers"][0]
    assert int(engine["data"]["SERVESTACK_HASHER_THREADS"]) <= int(hasher["resources"]["limits"]["cpu"])
    assert hasher["resources"]["requests"] == hasher["resources"]["limits"]


@pytest.mark.parametrize("name", ["hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1"])
def test_hasher_prepare_builds_what_the_server_serves(objs: tuple[dict, ...], name: str) -> None:
    spec = pod_spec(get(objs, "Deployment", name))
    prepare = next(c for c in spec["initContainers"] if c["name"] == "prepare")
    server = spec["containers"][0]
    p_env, s_env = env_map(objs, prepare), env_map(objs, server)
    for key in ("SERVESTACK_HASHER_MODEL", "SERVESTACK_HASHER_VERSION", "SERVESTACK_HASHER_CACHE_DIR",
                "SERVESTACK_HASHER_BACKEND", "SERVESTACK_HASHER_PRECISION", "SERVESTACK_HASHER_FALLBACKS",
                "OMP_NUM_THREADS"):
        assert p_env[key] == s_env[key], key
    for key in ("SERVESTACK_HASHER_MODEL", "SERVESTACK_HASHER_VERSION", "SERVESTACK_HASHER_CACHE_DIR"):
        assert f"$({key})" in prepare["command"], key  # expanded by the kubelet from the same env
    # prepare walks the server's own candidates (backend, then fallbacks) from that env: naming one
    # backend on the command line would fail the pod where the server would have fallen back.
    assert "--backend" not in prepare["command"] and "--precision" not in prepare["command"]
    mounts = lambda c: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}  # noqa: E731
    assert mounts(prepare)[s_env["SERVESTACK_HASHER_CACHE_DIR"]] == mounts(server)[s_env["SERVESTACK_HASHER_CACHE_DIR"]]
    model, version = name.removeprefix("hasher-").split("-v")
    assert (s_env["SERVESTACK_HASHER_MODEL"], s_env["SERVESTACK_HASHER_VERSION"]) == (model, version)
