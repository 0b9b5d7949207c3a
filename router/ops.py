"""Operational endpoints: liveness, readiness, Prometheus metrics, and the offline docs pages.

The docs pages load Swagger UI / ReDoc from assets served by the router itself (the
``fastapi-offline`` package ships them): FastAPI's defaults load them from a CDN, which fails
offline and behind firewalls.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.policy import EXPLAINER

ops = APIRouter(include_in_schema=False)
DOCS_STATIC = "/docs-static"


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    problems: list[str] = []
    if not getattr(state, "started", False):
        problems.append("starting")
    else:
        try:
            await asyncio.to_thread(state.db.ping)
        except Exception as exc:  # any DB failure means not ready; the message says which
            problems.append(f"audit store: {exc}")
        if state.settings.ready_requires_backends:
            if state.health.rounds == 0:
                problems.append("first health check pending")
            policy = state.policy.current
            for route, spec in policy.spec.routes.items():
                backends = {a.backend for a in spec.arms if a.weight > 0}
                ok = any(
                    ep.healthy is True for b in backends for ep in (state.balancer.pool(b).endpoints.values()
                                                                    if state.balancer.pool(b) else [])
                )
                if not ok:
                    problems.append(f"route {route}: no healthy replica of {sorted(backends)}")
    if problems:
        return JSONResponse({"error": {"code": "not_ready", "message": "; ".join(problems)}}, status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "policy_version": state.policy.current.version,
                         "explainer": bool(state.balancer.available(EXPLAINER))})


@ops.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def docs_assets() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed: it provides the offline docs assets")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def mount_docs(app: FastAPI) -> None:
    app.mount(DOCS_STATIC, StaticFiles(directory=docs_assets()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_STATIC}/favicon.png", with_google_fonts=False)
