"""Build the policy source the settings name."""

from __future__ import annotations

from router.config import RouterSettings
from router.kube import KubeClient
from router.policy_sources import PolicySource
from router.policy_sources.configmap import ConfigMapPolicySource
from router.policy_sources.file import FilePolicySource


def make_source(settings: RouterSettings) -> PolicySource:
    if settings.policy_source == "configmap":
        kube = KubeClient(settings.kube_api_url) if settings.kube_api_url else KubeClient.in_cluster()
        return ConfigMapPolicySource(kube, settings.policy_namespace, settings.policy_configmap,
                                     settings.policy_configmap_key)
    assert settings.policy_path is not None  # RouterSettings refuses a file source without a path
    return FilePolicySource(settings.policy_path)
