"""Both overlays render, hold the expected objects, and validate against the Kubernetes schema.

Schema: ``kubernetes-validate --strict`` for Kubernetes 1.32 (its bundled JSON schemas, offline).
Everything rendered is a core/built-in kind (HPA, PDB, NetworkPolicy included), so no CRD
schemas are needed: a rendered kind the validator has no schema for fails the test.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.k8s.manifests import K8S_VERSION, NAMESPACE, get, of_kind

COMPONENTS = ("router", "hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1", "explainer")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def test_overlay_holds_every_component(objs: tuple[dict, ...]) -> None:
    deployments, services = of_kind(objs, "Deployment"), of_kind(objs, "Service")
    hpas, pdbs = of_kind(objs, "HorizontalPodAutoscaler"), of_kind(objs, "PodDisruptionBudget")
    for name in COMPONENTS:
        assert name in deployments and name in services and name in hpas and name in pdbs, name
    assert "jaeger" in deployments and "jaeger" in services
    assert "postgresql" in of_kind(objs, "StatefulSet")
    assert {"router-policy"} <= set(of_kind(objs, "ConfigMap"))
    assert {"servestack-router", "servestack-canary", "servestack-workload"} <= set(of_kind(objs, "ServiceAccount"))
    assert "default-deny-all" in of_kind(objs, "NetworkPolicy")


def test_everything_lives_in_one_namespace(objs: tuple[dict, ...]) -> None:
    for o in objs:
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in o["metadata"], o["metadata"]["name"]
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']}"
    assert get(objs, "Namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_object_validates_strictly(objs: tuple[dict, ...]) -> None:
    failures = []
    for o in objs:
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except Exception as exc:  # ValidationError, SchemaNotFoundError: both are failures here
            failures.append(f"{o['kind']}/{o['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)
    assert len(objs) > 40


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}), "unknown field"),
        (lambda d: d["spec"].update(replicas="two"), "wrong type"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "missing required field"),
    ],
)
def test_validator_catches_broken_objects(mutate, why: str) -> None:
    """Negative control: the strict validation above would notice a broken manifest."""
    from tests.k8s.manifests import render

    broken = copy.deepcopy(get(render("cpu"), "Deployment", "router"))
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
