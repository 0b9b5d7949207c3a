"""The in-cluster canary Job and the Prometheus scrape job that feeds the HPAs and the canary."""

from __future__ import annotations

import re
import subprocess

import kubernetes_validate
import yaml

from tests.k8s.manifests import K8S, K8S_VERSION, get, label_selector_matches, of_kind, pod_labels, render


def _canary_objs() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "canary")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_canary_job_validates_and_parses_with_the_cli() -> None:
    from servestack.cli import build_parser

    (job,) = _canary_objs()
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "servestack-canary"
    container = spec["containers"][0]
    argv = [*container["command"][1:], *container["args"]]
    argv = [a.replace("$(K8S_NAMESPACE_NAME)", "servestack") for a in argv]
    args = build_parser().parse_args(argv)  # SystemExit on an unknown flag
    assert args.kubernetes and args.configmap == "router-policy" and args.load_rps == 0
    assert (args.route, args.canary_arm) == ("face", "v2")
    # The route and arm exist in the shipped policy; the ConfigMap it patches is the one RBAC names.
    objs = render("cpu")
    from router.policy_store import parse_policy

    policy = parse_policy(get(objs, "ConfigMap", args.configmap)["data"]["policy.yaml"])
    assert args.canary_arm in {a.name for a in policy.routes[args.route].arms}
    role = get(objs, "Role", "servestack-canary-policy-editor")
    assert role["rules"][0]["resourceNames"] == [args.configmap]


def test_canary_job_is_admitted_by_the_networkpolicies() -> None:
    (job,) = _canary_objs()
    labels = pod_labels(job)
    policies = of_kind(render("cpu"), "NetworkPolicy")
    for name in ("canary-controller", "allow-kube-apiserver-egress", "allow-dns-egress"):
        assert label_selector_matches(policies[name]["spec"]["podSelector"], labels), name
    prometheus_ports = [p["port"] for r in policies["canary-controller"]["spec"]["egress"] for p in r["ports"]]
    url = job["spec"]["template"]["spec"]["containers"][0]["args"]
    port = int(re.search(r"--prometheus-url=http://[^:]+:(\d+)", " ".join(url)).group(1))
    assert port in prometheus_ports


def _relabel(meta: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus relabelling (replace/keep/drop, RE2 anchored) of one target; None if dropped."""
    labels = dict(meta)
    for cfg in configs:
        value = cfg.get("separator", ";").join(labels.get(s, "") for s in cfg.get("source_labels", []))
        regex = re.compile(f"^(?:{cfg.get('regex', '(.*)')})$")
        m = regex.match(value)
        action = cfg.get("action", "replace")
        if action == "keep" and not m:
            return None
        if action == "drop" and m:
            return None
        if action == "replace" and m:
            replacement = re.sub(r"\$(\d+)", r"\\\1", cfg.get("replacement", "$1"))
            labels[cfg["target_label"]] = m.expand(replacement)
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def test_scrape_job_labels_match_alert_rules_and_adapter() -> None:
    config = yaml.safe_load((K8S / "prometheus" / "scrape-config.yaml").read_text())
    (job,) = config["scrape_configs"]
    objs = render("cpu")
    expected_jobs = {"router": "servestack-router", "hasher-face-v1": "servestack-hasher",
                     "explainer": "servestack-explainer"}
    for name, job_name in expected_jobs.items():
        template = get(objs, "Deployment", name)["spec"]["template"]
        meta = {
            "__address__": "10.1.2.3:9999",
            "__meta_kubernetes_namespace": "servestack",
            "__meta_kubernetes_pod_name": f"{name}-abc",
            "__meta_kubernetes_pod_node_name": "node-1",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_init": "false",
            **{f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9]', '_', k)}": v
               for k, v in template["metadata"]["annotations"].items()},
            **{f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9]', '_', k)}": v
               for k, v in template["metadata"]["labels"].items()},
        }
        target = _relabel(meta, job["relabel_configs"])
        port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert target is not None, name
        assert target["__address__"] == f"10.1.2.3:{port}"
        assert target["__metrics_path__"] == "/metrics"
        assert (target["job"], target["service"]) == (job_name, name)
        assert (target["namespace"], target["pod"]) == ("servestack", f"{name}-abc")
        assert _relabel({**meta, "__meta_kubernetes_pod_container_init": "true"}, job["relabel_configs"]) is None
    unannotated = {"__address__": "10.0.0.9:80", "__meta_kubernetes_namespace": "servestack"}
    assert _relabel(unannotated, job["relabel_configs"]) is None
    # Every job matcher in k8s/monitoring's alert rules matches a job this scrape config produces.
    rules = (K8S / "monitoring" / "prometheus-rules.yaml").read_text()
    matchers = re.findall(r'job(=~?)"([^"]*)"', rules)
    assert matchers
    for op, value in matchers:
        pattern = value if op == "=~" else re.escape(value)
        assert any(re.fullmatch(pattern, j) for j in expected_jobs.values()), f"job{op}{value!r} matches no job"
