"""Cross-checks between the rendered objects, the apps and the adapter rules.

What the schema cannot see: an HPA pointing at a missing Deployment or at a metric nobody
publishes, a Service selecting no pod, a probe on a route the app does not serve, a policy the
router would refuse, a setting name the component does not read.
"""

from __future__ import annotations

import re

import pytest

from tests.k8s.manifests import (
    COMPONENT_OF_MODULE,
    NAMESPACE,
    adapter_rules,
    all_containers,
    component_of,
    env_map,
    get,
    of_kind,
    pod_labels,
    pod_spec,
    python_module,
    selector_matches,
    workloads,
)


def _adapter_metrics() -> dict[str, dict]:
    """Custom-metrics names the adapter publishes -> rule (name.as applied to the series name)."""
    published = {}
    for rule in adapter_rules():
        series = re.search(r'__name__="([^"]+)"', rule["seriesQuery"]) or re.match(r"([A-Za-z_:][\w:]*)",
                                                                                   rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        source = series.group(1)
        matches, as_ = rule["name"]["matches"], rule["name"]["as"]
        assert re.fullmatch(matches, source), f"name.matches {matches!r} does not match series {source!r}"
        published[re.sub(matches, as_.replace("$", "\\"), source)] = {**rule, "source": source}
    return published


def test_adapter_rules_publish_documented_series_per_pod(interfaces_text: str) -> None:
    published = _adapter_metrics()
    assert set(published) == {
        "servestack_hasher_inflight_requests", "servestack_hasher_queue_depth", "vllm_num_requests_waiting",
        "vllm_kv_cache_usage_perc", "servestack_router_http_requests_per_second",
    }
    for name, rule in published.items():
        # The series the rule reads is one the components export (INTERFACES.md lists them).
        assert f"`{rule['source']}" in interfaces_text, f"{rule['source']} is not a documented metric"
        # Custom metric names must be valid path segments: no ':' (vLLM's names are renamed).
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}, name
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
        assert "<<.Series>>{<<.LabelMatchers>>" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_every_hpa_targets_a_deployment_and_a_published_metric(objs: tuple[dict, ...]) -> None:
    deployments, published = of_kind(objs, "Deployment"), _adapter_metrics()
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    assert len(hpas) == 5
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        ref = spec["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment"), name
        assert ref["name"] in deployments, f"HPA {name} targets missing Deployment {ref['name']}"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"], name
        for metric in spec["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in published, f"HPA {name}: {metric['pods']['metric']}"
                assert metric["pods"]["target"]["type"] == "AverageValue"
            else:
                assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu", (name, metric)
                container = pod_spec(deployments[ref["name"]])["containers"][0]
                assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a CPU request"
        # Anti-flapping: scale down only after a sustained drop, and slowly.
        down = spec["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300, name
        assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"]), name
        assert spec["behavior"]["scaleUp"]["policies"], name


def test_each_tier_scales_on_its_own_signal(objs: tuple[dict, ...]) -> None:
    def signals(name: str) -> set[str]:
        hpa = get(objs, "HorizontalPodAutoscaler", name)
        return {m["pods"]["metric"]["name"] if m["type"] == "Pods" else m["resource"]["name"]
                for m in hpa["spec"]["metrics"]}

    assert signals("router") == {"cpu", "servestack_router_http_requests_per_second"}
    for hasher in ("hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1"):
        assert signals(hasher) == {"servestack_hasher_inflight_requests", "servestack_hasher_queue_depth"}
    assert signals("explainer") == {"vllm_num_requests_waiting", "vllm_kv_cache_usage_perc"}
    # The stable tiers never drop to one replica (a node drain would take the tier down).
    for name in ("router", "hasher-face-v1", "hasher-fingerprint-v1"):
        assert get(objs, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] >= 2


def test_services_select_exactly_one_workload_on_a_named_port(objs: tuple[dict, ...]) -> None:
    for name, svc in of_kind(objs, "Service").items():
        selector = svc["spec"]["selector"]
        matching = [w for w in workloads(objs) if selector_matches(selector, pod_labels(w))]
        assert len(matching) == 1, f"Service {name} selects {[w['metadata']['name'] for w in matching]}"
        ports = {p["name"]: p["containerPort"] for c in pod_spec(matching[0])["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port named {port['targetPort']}"


def test_pdbs_select_their_deployment_and_never_block_drains(objs: tuple[dict, ...]) -> None:
    deployments = of_kind(objs, "Deployment")
    for name, pdb in of_kind(objs, "PodDisruptionBudget").items():
        assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployments[name]))
        replicas = get(objs, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"]
        allowed = pdb["spec"].get("maxUnavailable", replicas - pdb["spec"].get("minAvailable", 0))
        assert allowed >= 1, f"PDB {name} would block every eviction at {replicas} replica(s)"
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_probes_hit_real_routes_of_their_component(objs: tuple[dict, ...],
                                                   component_routes: dict[str, set[str]]) -> None:
    from trt_serving.oip_grpc import SERVICE as OIP_GRPC_SERVICE

    expected = {  # docs/INTERFACES.md: readiness / liveness per component ("grpc:<service>": a gRPC probe)
        "router": ("/readyz", "/healthz"), "hasher": ("/v2/health/ready", "grpc:"),
        "explainer": ("/readyz", "/healthz"),
    }
    grpc_health_services = {"hasher": {"", OIP_GRPC_SERVICE}}  # what oip_grpc_server.HealthServicer answers
    seen = set()
    for workload in workloads(objs):
        for container in pod_spec(workload)["containers"]:
            component = component_of(container)
            if component is None:
                continue
            seen.add(component)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            paths = {}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                where = f"{workload['metadata']['name']} {kind}"
                if "grpc" in container[kind]:
                    # gRPC probes take a port number; it must be the container's gRPC port.
                    probe = container[kind]["grpc"]
                    assert probe["port"] == ports.get("grpc"), f"{where}: port {probe['port']} is not the gRPC port"
                    assert probe.get("service", "") in grpc_health_services.get(component, set()), where
                    paths[kind] = f"grpc:{probe.get('service', '')}"
                    continue
                probe = container[kind]["httpGet"]
                assert probe["path"] in component_routes[component], f"{where} {probe['path']} is not a route"
                assert probe["port"] in ports, f"{where} port {probe['port']} is not a container port"
                paths[kind] = probe["path"]
            ready, live = expected[component]
            assert paths["readinessProbe"] == ready
            assert paths["livenessProbe"] == live
            # Prometheus scrapes the port the app serves /metrics on.
            annotations = workload["spec"]["template"]["metadata"]["annotations"]
            assert "/metrics" in component_routes[component]
            assert annotations["prometheus.io/path"] == "/metrics"
            assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert seen == set(COMPONENT_OF_MODULE.values())


def test_policy_configmap_parses_with_the_router_model_and_points_at_services(objs: tuple[dict, ...]) -> None:
    from router.policy import EndpointSliceSpec
    from router.policy_store import parse_policy

    spec = parse_policy(get(objs, "ConfigMap", "router-policy")["data"]["policy.yaml"], "router-policy")
    services, deployments = of_kind(objs, "Service"), of_kind(objs, "Deployment")
    backends = {**spec.backends, "explainer": spec.explainer}
    assert set(backends) == {"hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1", "explainer"}
    for name, backend in backends.items():
        slices = backend.endpointslices
        assert isinstance(slices, EndpointSliceSpec), f"{name}: in-cluster backends use EndpointSlices"
        assert slices.namespace == NAMESPACE and slices.service in services, name
        # EndpointSlices list the pods' ports: the policy's port must be the container port.
        workload = next(d for d in deployments.values()
                        if selector_matches(services[slices.service]["spec"]["selector"], pod_labels(d)))
        assert slices.port in {p["containerPort"] for p in pod_spec(workload)["containers"][0]["ports"]}, name
    face = {a.name: (a.backend, a.weight) for a in spec.routes["face"].arms}
    assert face == {"v1": ("hasher-face-v1", 100), "v2": ("hasher-face-v2", 0)}
    assert spec.routes["face"].shadow is not None and spec.routes["face"].shadow.arm == "v2"
    # The router reads this very ConfigMap through the API, in its own namespace.
    router = get(objs, "Deployment", "router")
    env = env_map(objs, pod_spec(router)["containers"][0])
    assert env["SERVESTACK_ROUTER_POLICY_SOURCE"] == "configmap"
    assert env["SERVESTACK_ROUTER_POLICY_CONFIGMAP"] == "router-policy"
    assert env["SERVESTACK_ROUTER_POLICY_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def _settings_classes() -> dict[str, tuple[str, type]]:
    from llm_serving.config import ExplainerSettings
    from router.config import RouterSettings
    from trt_serving.config import HasherSettings

    return {
        "router": ("SERVESTACK_ROUTER_", RouterSettings),
        "trt_serving": ("SERVESTACK_HASHER_", HasherSettings),
        "llm_serving": ("SERVESTACK_EXPLAINER_", ExplainerSettings),
    }


def test_servestack_env_is_valid_settings_of_that_component(objs: tuple[dict, ...]) -> None:
    """Every SERVESTACK_* variable names a setting of the container's component, and the values
    pass that settings class's own validation (backend names, precisions, ranges)."""
    classes = _settings_classes()
    checked = 0
    for workload in workloads(objs):
        for container in all_containers(workload):
            module = (python_module(container) or "").split(".")[0]
            if module not in classes:
                continue
            where = f"{workload['metadata']['name']}/{container['name']}"
            env = env_map(objs, container)
            prefix, settings_cls = classes[module]
            foreign = [k for k in env if k.startswith("SERVESTACK_") and not k.startswith(prefix)]
            assert not foreign, f"{where}: another component's settings {foreign}"
            values = {}
            for key, value in env.items():
                if key.startswith(prefix):
                    field = key[len(prefix):].lower()
                    assert field in settings_cls.model_fields, f"{where}: {key} is not a setting"
                    if isinstance(value, str):  # valueFrom (Secret) values are not known here
                        values[field] = value
            if module == "router":  # the keys file and audit URL come from Secrets at run time
                values.setdefault("audit_url", "postgresql+psycopg://u:p@postgresql:5432/audit")
            settings = settings_cls(**values)
            checked += len(values)
            if container["name"] == "prepare":
                continue
            assert settings.host == "0.0.0.0", where
            assert settings.port == container["ports"][0]["containerPort"], where
            if module == "trt_serving":  # every hasher pod serves OIP over gRPC on its named port
                assert settings.grpc_port == {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"], where
    assert checked > 20


@pytest.mark.parametrize("module", ["router", "trt_serving", "llm_serving"])
def test_manifest_commands_name_runnable_modules(module: str) -> None:
    import importlib.util

    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"python -m {module} has no __main__"


def test_container_commands_are_known_entry_points(objs: tuple[dict, ...]) -> None:
    import importlib.util

    for workload in workloads(objs):
        for container in all_containers(workload):
            module = python_module(container)
            if module is None:
                continue
            found = importlib.util.find_spec(module)
            assert found is not None, f"{workload['metadata']['name']}/{container['name']}: no module {module}"
            if found.submodule_search_locations is not None:  # a package: needs __main__
                assert importlib.util.find_spec(f"{module}.__main__") is not None, module
