"""Direct ASGI dispatch of the JSON POST endpoints (/v1/hash, /v1/verify, /v1/enroll).

FastAPI's per-request machinery (routing by regex over every route, dependency solving, Request
and Response objects) was ~20% of the router's CPU on a proxied hash (py-spy, BENCHMARKS.md).
This dispatcher finds the endpoint by (method, path) and calls the same
:meth:`router.endpoints.JsonEndpoint.respond` as the FastAPI route: one body per endpoint.
``scope["route"]`` is set to the declared route, so metrics and span names are the template's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute

from router.endpoints import JSON_ENDPOINTS


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


class FastDispatch:
    """Serve the JSON endpoints among ``routes`` directly; everything else goes to ``app``."""

    def __init__(self, app: Any, routes: Iterable[Any]) -> None:
        self.app = app
        self.table = {("POST", r.path): (JSON_ENDPOINTS[r.path], r) for r in routes
                      if isinstance(r, APIRoute) and r.path in JSON_ENDPOINTS and "POST" in r.methods}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        hit = self.table.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if hit is None:
            await self.app(scope, receive, send)
            return
        endpoint, scope["route"] = hit
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # lower-case names (ASGI); the first of repeated headers wins
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))

        async def read_body() -> bytes:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

        try:
            response = await endpoint.respond(scope["app"].state, headers, read_body)
        except _Disconnected:
            return
        await response(scope, receive, send)
