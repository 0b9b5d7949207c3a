"""``GET /v1/experiments/{name}`` (JSON) and ``GET /v1/experiments/{name}/report`` (HTML page).

Both need the ``client`` scope, the way the rest of API v1 does. The experiment name is the
route's ``experiment`` (or the route's name when it has none); rows come from the audit store,
weights from the policy in force.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from router.deps import ClientAuth
from router.endpoints import ERRORS
from router.errors import NotFound
from router.experiments.report_html import render_page
from router.experiments.stats import ExperimentReport, build_report
from router.policy import NAME_PATTERN

NAME = Path(pattern=NAME_PATTERN, description="experiment name (the route's `experiment`, else the route)")
Since = Annotated[float | None, Query(ge=0, le=4_102_444_800,  # 2100-01-01: bounded, as the schema says
                                      description="only rows created at or after this unix time")]
Confidence = Annotated[float, Query(ge=0.5, le=0.999, description="confidence of the intervals; alpha = 1 - it")]


async def _report(request: Request, name: str, since: float | None, confidence: float) -> ExperimentReport:
    policy = request.app.state.policy.current
    route = next((r for r in policy.spec.routes if policy.experiment(r) == name), None)
    if route is None:
        names = sorted(policy.experiment(r) for r in policy.spec.routes)
        raise NotFound(f"no experiment {name!r} (experiments: {names})")
    rows = await request.app.state.audit_store.experiment_rows(route, since=since)
    return build_report(name, route, rows, policy.weights(route), generated_at=time.time(), since=since,
                        confidence=confidence)


def build_router() -> APIRouter:
    """The experiments API; the app includes it with ``app.include_router(build_router())``."""
    api = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=ERRORS)

    @api.get("/{name}", response_model=ExperimentReport, summary="A/B report of an experiment (JSON)",
             description="Per-arm counts, accept rates with Wilson intervals, latency quantiles, a two-proportion "
                         "z-test of each arm against the first (control) arm, and a sample-ratio-mismatch check "
                         "of the observed split against the configured weights.")
    async def experiment_json(request: Request, _p: ClientAuth, name: str = NAME, since: Since = None,
                              confidence: Confidence = 0.95) -> ExperimentReport:
        return await _report(request, name, since, confidence)

    @api.get("/{name}/report", response_class=HTMLResponse, summary="A/B report of an experiment (HTML page)",
             description="The same report as a self-contained page with charts (no scripts, works offline).")
    async def experiment_html(request: Request, _p: ClientAuth, name: str = NAME, since: Since = None,
                              confidence: Confidence = 0.95) -> HTMLResponse:
        return HTMLResponse(render_page(await _report(request, name, since, confidence)))

    return api
