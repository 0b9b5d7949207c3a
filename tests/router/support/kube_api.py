"""kmock's Kubernetes emulator plus the one API server behaviour our writes rely on.

kmock stores objects and merges patches but keeps no ``resourceVersion``. A real API server
stamps a new one on every write and refuses (409 Conflict) a write whose body names an older
one: the precondition router/kube.py and the canary's ConfigMap actuator send. This subclass adds
exactly that, so a lost update shows up in tests as it would against a cluster.
Use with ``@pytest.mark.kmock(cls=ResourceVersionEmulator)``.
"""

from __future__ import annotations

import itertools

from kmock import KubernetesEmulator
from kmock._internal import enums, k8s, rendering


class ResourceVersionEmulator(KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1000)
        self.sent_versions: list[str | None] = []  # metadata.resourceVersion of each write, as sent

    async def _handle(self, request: rendering.Request):  # type: ignore[override]
        writes = request.action == enums.action.CREATE or (
            request.action == enums.action.UPDATE and request.name is not None)
        if request.resource is not None and writes and isinstance(request.data, dict):
            if request.action == enums.action.UPDATE:
                sent = (request.data.get("metadata") or {}).get("resourceVersion")
                self.sent_versions.append(sent)
                stored = self._stored_rv(request)
                if sent is not None and stored is not None and str(sent) != stored:
                    return await self._render_error(k8s.KubernetesObjectConflictError())
            request.data.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))
        return await super()._handle(request)

    def _stored_rv(self, request: rendering.Request) -> str | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        rv = (self._objects[key].get("metadata") or {}).get("resourceVersion")
        return None if rv is None else str(rv)
