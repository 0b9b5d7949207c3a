"""A small async client for the one Kubernetes object the router writes: its policy ConfigMap.

Two calls, the verbs the router's Role grants (``k8s/base/rbac.yaml``, checked by
``tests/k8s/test_rbac.py``): ``get`` (read, and poll for changes) and ``patch`` (a JSON merge
patch carrying ``metadata.resourceVersion``: the API server applies it only if the object is
still at that version and answers 409 Conflict otherwise).

In a pod it authenticates with the mounted service-account token (re-read every minute: bound
tokens rotate) and trusts the cluster CA; tests point it at an API emulator over plain HTTP.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
VERBS = frozenset({"get", "patch"})  # every verb this module uses on configmaps


class KubeError(Exception):
    """The API answered an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeConflict(KubeError):
    """409: the object is no longer at the resourceVersion the patch named."""


@dataclass(frozen=True)
class ConfigMap:
    data: dict[str, str]
    resource_version: str


class KubeClient:
    def __init__(self, base_url: str, *, token_path: Path | None = None, ca_path: Path | None = None,
                 timeout_s: float = 5.0) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_path)) if ca_path else True
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), verify=verify, timeout=timeout_s)
        self._token_path = token_path
        self._token: tuple[float, str] | None = None

    @classmethod
    def in_cluster(cls, timeout_s: float = 5.0) -> KubeClient:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not in a pod: KUBERNETES_SERVICE_HOST is unset (give kube_api_url instead)")
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token_path=SA_DIR / "token", ca_path=SA_DIR / "ca.crt",
                   timeout_s=timeout_s)

    def _headers(self) -> dict[str, str]:
        if self._token_path is None:
            return {}
        now = time.monotonic()
        if self._token is None or now - self._token[0] > 60:
            self._token = (now, self._token_path.read_text().strip())  # a few bytes from tmpfs
        return {"Authorization": f"Bearer {self._token[1]}"}

    @staticmethod
    def _path(namespace: str, name: str) -> str:
        return f"/api/v1/namespaces/{namespace}/configmaps/{name}"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
        try:
            resp = await self._http.request(method, path, headers=headers,
                                            content=None if body is None else json.dumps(body).encode())
        except (httpx.HTTPError, OSError) as exc:
            raise KubeError(f"{method} {path}: {exc}") from exc
        if resp.status_code == 409:
            raise KubeConflict(f"{method} {path}: 409 conflict", 409)
        if resp.status_code >= 300:
            raise KubeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}", resp.status_code)
        return resp.json()

    async def get_configmap(self, namespace: str, name: str) -> ConfigMap:
        return _configmap(await self._call("GET", self._path(namespace, name)))

    async def patch_configmap(self, namespace: str, name: str, data: dict[str, str],
                              resource_version: str) -> ConfigMap:
        """Merge ``data`` in if the object is still at ``resource_version``; KubeConflict otherwise."""
        body = {"metadata": {"resourceVersion": resource_version}, "data": data}
        return _configmap(await self._call("PATCH", self._path(namespace, name), body))

    async def aclose(self) -> None:
        await self._http.aclose()


def _configmap(obj: dict[str, Any]) -> ConfigMap:
    return ConfigMap(dict(obj.get("data") or {}), str((obj.get("metadata") or {}).get("resourceVersion", "")))
