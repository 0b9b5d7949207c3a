"""Weights through the router's admin API: ``PATCH /admin/v1/routes/{route}/weights``.

Every write carries ``If-Match`` with the ETag of the policy this actuator last read or wrote.
On 412 (someone else wrote since) it reads the policy again: if the arms it is about to set still
hold the weights it last knew, the other write touched something else and the PATCH is sent
again with the new ETag; if those arms were moved by someone else (an operator mid-canary), it
refuses with :class:`ActuatorError` rather than overwrite that change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from canary.actuators import ActuatorError

WRITE_ATTEMPTS = 3


class AdminApiActuator:
    def __init__(self, http: httpx.AsyncClient, router_url: str, admin_key: str, *, timeout_s: float = 5.0) -> None:
        self._http = http
        self._base = router_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        self._timeout_s = timeout_s
        self._etag: str | None = None
        self._routes: dict[str, Any] = {}

    def _remember(self, resp: httpx.Response) -> None:
        # The admin API answers {"version": N, "etag": "...", "policy": {...}} with an ETag header.
        self._etag = resp.headers.get("etag")
        self._routes = resp.json().get("policy", {}).get("routes", {})

    async def _read(self) -> None:
        resp = await self._http.get(f"{self._base}/admin/v1/policy", headers=self._headers, timeout=self._timeout_s)
        if resp.status_code != 200:
            raise ActuatorError(f"cannot read the router policy: {resp.status_code} {resp.text[:300]}")
        self._remember(resp)

    def _known(self, route: str, arms: Mapping[str, float]) -> dict[str, float | None]:
        known = {a["name"]: float(a["weight"]) for a in self._routes.get(route, {}).get("arms", [])}
        return {name: known.get(name) for name in arms}

    async def set_weights(self, route: str, weights: Mapping[str, float]) -> None:
        if self._etag is None:
            await self._read()
        for _attempt in range(WRITE_ATTEMPTS):
            assert self._etag is not None
            resp = await self._http.patch(f"{self._base}/admin/v1/routes/{route}/weights",
                                          json={"weights": dict(weights)}, timeout=self._timeout_s,
                                          headers={**self._headers, "If-Match": self._etag})
            if resp.status_code == 200:
                self._remember(resp)
                return
            if resp.status_code != 412:
                raise ActuatorError(
                    f"router refused weights {dict(weights)} for {route!r}: {resp.status_code} {resp.text[:300]}")
            before = self._known(route, weights)
            await self._read()
            now = self._known(route, weights)
            if now != before:
                raise ActuatorError(f"the weights of {route!r} were changed by another writer ({before} -> {now}); "
                                    "not overwriting them")
        raise ActuatorError(f"weights for {route!r}: the policy kept changing under {WRITE_ATTEMPTS} writes")

    async def get_weights(self, route: str) -> dict[str, float]:
        return {a["name"]: float(a["weight"]) for a in await self._arms(route)}

    async def get_backends(self, route: str) -> dict[str, str]:
        return {a["name"]: a["backend"] for a in await self._arms(route)}

    async def _arms(self, route: str) -> list[dict]:
        await self._read()
        if route not in self._routes:
            raise ActuatorError(f"the router policy has no route {route!r} (routes: {sorted(self._routes)})")
        return list(self._routes[route]["arms"])
