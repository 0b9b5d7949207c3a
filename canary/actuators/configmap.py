"""Weights through the router-policy ConfigMap, with the official ``kubernetes`` client.

The routers read the ConfigMap through the API (``policy_source=configmap``) and poll it, so one
patch moves every replica within seconds; the patch bumps the document's ``version``.
The patch is a JSON merge patch (RFC 7386, ``kubectl patch --type merge``) of
``data.<key>`` with the whole policy YAML, carrying ``metadata.resourceVersion`` so that a
concurrent edit (a person with kubectl, a router's admin API) makes the API server answer 409
instead of being silently overwritten; the actuator then reads again and retries, unless the other
writer moved the very arms it sets since it last read or wrote them (then it refuses).
The new policy is validated with the router's own model before it is sent:
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
WRITE_ATTEMPTS = 3


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
        self._known: dict[str, dict[str, float]] = {}  # per route: the weights last read or written

    def _read(self) -> tuple[str, str | None]:
        cm = self._api.read_namespaced_config_map(self.name, self.namespace)
        data = cm.data or {}
        if self.key not in data:
            raise ActuatorError(f"ConfigMap {self.namespace}/{self.name} has no key {self.key!r}")
        return data[self.key], cm.metadata.resource_version

    def _weights(self, text: str, route: str) -> dict[str, float]:
        spec = parse_policy(text, f"configmap data[{self.key!r}]")
        if route not in spec.routes:
            raise ActuatorError(f"the policy in {self.namespace}/{self.name} has no route {route!r}")
        return {a.name: a.weight for a in spec.routes[route].arms}

    def _set(self, route: str, weights: Mapping[str, float]) -> None:
        from kubernetes.client.exceptions import ApiException

        for _attempt in range(WRITE_ATTEMPTS):
            text, version = self._read()
            now = self._weights(text, route)
            known = self._known.get(route)
            before, after = ({a: w.get(a) for a in weights} for w in (known or now, now))
            if before != after:
                raise ActuatorError(f"the weights of {route!r} were changed by another writer ({before} -> {after}); "
                                    "not overwriting them")
            try:
                body = policy_patch(text, route, weights, key=self.key, resource_version=version)
            except (KeyError, ValueError) as exc:
                raise ActuatorError(f"cannot set weights {dict(weights)} on route {route!r}: {exc}") from exc
            try:
                # The client picks the patch type from the body; say merge explicitly (what the body is).
                self._api.patch_namespaced_config_map(self.name, self.namespace, body,
                                                      _content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status == 409:  # written in between: read again (and check our arms again)
                    continue
                raise ActuatorError(f"ConfigMap {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc
            self._known[route] = {**now, **weights}
            return
        raise ActuatorError(f"weights for {route!r}: the ConfigMap kept changing under {WRITE_ATTEMPTS} writes")

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
        self._known[route] = {a.name: a.weight for a in spec.routes[route].arms}
        return list(spec.routes[route].arms)
