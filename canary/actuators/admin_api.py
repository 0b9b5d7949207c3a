"""Weights through the router's admin API: ``PATCH /admin/v1/routes/{route}/weights``."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from canary.actuators import ActuatorError


class AdminApiActuator:
    def __init__(self, http: httpx.AsyncClient, router_url: str, admin_key: str, *, timeout_s: float = 5.0) -> None:
        self._http = http
        self._base = router_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        self._timeout_s = timeout_s

    async def set_weights(self, route: str, weights: Mapping[str, float]) -> None:
        resp = await self._http.patch(f"{self._base}/admin/v1/routes/{route}/weights",
                                      json={"weights": dict(weights)}, headers=self._headers, timeout=self._timeout_s)
        if resp.status_code >= 300:
            raise ActuatorError(
                f"router refused weights {dict(weights)} for {route!r}: {resp.status_code} {resp.text[:300]}")

    async def get_weights(self, route: str) -> dict[str, float]:
        return {a["name"]: float(a["weight"]) for a in await self._arms(route)}

    async def get_backends(self, route: str) -> dict[str, str]:
        return {a["name"]: a["backend"] for a in await self._arms(route)}

    async def _arms(self, route: str) -> list[dict]:
        resp = await self._http.get(f"{self._base}/admin/v1/policy", headers=self._headers, timeout=self._timeout_s)
        if resp.status_code != 200:
            raise ActuatorError(f"cannot read the router policy: {resp.status_code} {resp.text[:300]}")
        # The admin API answers {"version": N, "policy": {...the policy file...}}.
        routes = resp.json().get("policy", {}).get("routes", {})
        if route not in routes:
            raise ActuatorError(f"the router policy has no route {route!r} (routes: {sorted(routes)})")
        return list(routes[route]["arms"])
