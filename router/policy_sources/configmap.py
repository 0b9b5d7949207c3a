"""The policy document as one key of a ConfigMap, read and written through the Kubernetes API.

The token is the object's ``resourceVersion``; a write is a merge patch that names it, so the API
server itself refuses (409) a write based on a stale read. Reading through the API rather than a
mounted volume matters for the 10-second bound: kubelet refreshes ConfigMap volumes only on its
sync period (about a minute).
"""

from __future__ import annotations

from router.kube import KubeClient, KubeConflict, KubeError
from router.policy_sources import Snapshot, SourceConflict, SourceUnavailable


class ConfigMapPolicySource:
    def __init__(self, kube: KubeClient, namespace: str, name: str, key: str = "policy.yaml") -> None:
        self._kube = kube
        self.namespace, self.name, self.key = namespace, name, key
        self.origin = f"configmap {namespace}/{name}[{key}]"

    async def read(self) -> Snapshot:
        try:
            cm = await self._kube.get_configmap(self.namespace, self.name)
        except KubeError as exc:
            raise SourceUnavailable(f"{self.origin}: {exc}") from exc
        if self.key not in cm.data:
            raise SourceUnavailable(f"{self.origin}: the ConfigMap has no key {self.key!r}")
        return Snapshot(cm.data[self.key], cm.resource_version)

    async def write(self, text: str, expected: Snapshot) -> Snapshot:
        try:
            cm = await self._kube.patch_configmap(self.namespace, self.name, {self.key: text}, expected.token)
        except KubeConflict as exc:
            raise SourceConflict(f"{self.origin} changed since it was read") from exc
        except KubeError as exc:
            raise SourceUnavailable(f"{self.origin}: {exc}") from exc
        return Snapshot(cm.data.get(self.key, text), cm.resource_version)

    async def aclose(self) -> None:
        await self._kube.aclose()
