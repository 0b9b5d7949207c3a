"""Weights through the router-policy ConfigMap, with the official ``kubernetes`` client.

The routers read the ConfigMap through the API (``policy_source=configmap``) and poll it, so one
patch moves every replica within seconds; the patch bumps the document's ``version``.
The patch is a JSON merge patch (RFC 7386, ``kubectl patch --type merge``) of
``data.<key>`` with the whole policy YAML, carrying ``metadata.resourceVersion`` so that a
concurrent edit (a person with kubectl) makes the API server answer 409 instead of being
silently overwritten. The new policy is validated with the router's own model before it is sent:
a patch the routers would refuse is never written.

RBAC: ``get`` and ``patch`` on ``configmaps`` (resourceNames: the policy ConfigMap) in the
routers' namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from canary.actuators import ActuatorError
from router.policy import ArmSpec
from router.policy_store import parse_document, parse_policy, render_document

DEFAULT_NAME = "router-policy"
DEFAULT_KEY = "policy.yaml"


def policy_patch(policy_yaml: str, route: str, weights: Mapping[str, float], *, key: str = DEFAULT_KEY,
                 resource_version: str | None = None) -> dict[str, Any]:
    """The merge-patch body that sets ``weights`` on ``route`` in a ConfigMap's policy YAML (pure).

    Raises:
        router.errors.PolicyInvalid: the current YAML is not a valid policy.
        ValueError / KeyError: the route or an arm does not exist.
    """
    version, spec = parse_document(policy_yaml, f"configmap data[{key!r}]")
    text = render_document(version + 1, spec.with_weights(route, weights))  # every write bumps the version
    body: dict[str, Any] = {"data": {key: text}}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


class ConfigMapActuator:
    def __init__(self, core_v1: Any, namespace: str, name: str = DEFAULT_NAME, key: str = DEFAULT_KEY) -> None:
        """``core_v1``: a ``kubernetes.client.CoreV1Api`` (injected: in-cluster or kubeconfig)."""
        self._api = core_v1
        self.namespace = namespace
        self.name = name
        self.key = key

    def _read(self) -> tuple[str, str | None]:
        cm = self._api.read_namespaced_config_map(self.name, self.namespace)
        data = cm.data or {}
        if self.key not in data:
            raise ActuatorError(f"ConfigMap {self.namespace}/{self.name} has no key {self.key!r}")
        return data[self.key], cm.metadata.resource_version

    def _set(self, route: str, weights: Mapping[str, float]) -> None:
        text, version = self._read()
        try:
            body = policy_patch(text, route, weights, key=self.key, resource_version=version)
        except (KeyError, ValueError) as exc:
            raise ActuatorError(f"cannot set weights {dict(weights)} on route {route!r}: {exc}") from exc
        # The client picks the patch type from the body; say merge explicitly (what the body is).
        self._api.patch_namespaced_config_map(self.name, self.namespace, body,
                                              _content_type="application/merge-patch+json")

    async def set_weights(self, route: str, weights: Mapping[str, float]) -> None:
        # The official client is synchronous: keep it off the event loop.
        await asyncio.to_thread(self._set, route, weights)

    async def get_weights(self, route: str) -> dict[str, float]:
        return {a.name: a.weight for a in await self._arms(route)}

    async def get_backends(self, route: str) -> dict[str, str]:
        return {a.name: a.backend for a in await self._arms(route)}

    async def _arms(self, route: str) -> list[ArmSpec]:
        text, _version = await asyncio.to_thread(self._read)
        spec = parse_policy(text, f"configmap data[{self.key!r}]")
        if route not in spec.routes:
            raise ActuatorError(f"the policy in {self.namespace}/{self.name} has no route {route!r}")
        return list(spec.routes[route].arms)
