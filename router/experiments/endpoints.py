"""``GET /v1/experiments`` (the list), ``GET /v1/experiments/{name}`` (JSON report) and
``GET /v1/experiments/{name}/report`` (HTML page).

All need the ``client`` scope, the way the rest of API v1 does; reports count the caller's tenant
only. The experiment name is the route's ``experiment`` (or the route's name when it has none);
rows, first assignments and the weights of past policy versions come from the audit store,
today's weights from the policy.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from router.deps import ClientAuth
from router.endpoints import ERRORS
from router.errors import NotFound
from router.experiments.report import ExperimentReport, build_report
from router.experiments.report_html import render_page
from router.experiments.sequential import DEFAULT_TAU
from router.policy import NAME_PATTERN

NAME = Path(pattern=NAME_PATTERN, description="experiment name (the route's `experiment`, else the route)")
Since = Annotated[float | None, Query(ge=0, le=4_102_444_800,  # 2100-01-01: bounded, as the schema says
                                      description="only rows created at or after this unix time")]
Confidence = Annotated[float, Query(ge=0.5, le=0.999, description="confidence of the intervals; alpha = 1 - it")]
Threshold = Annotated[float | None, Query(ge=0, le=128, description="distance threshold of FAR/FRR "
                                                                       "(default: the router's default_threshold)")]
Tau = Annotated[float, Query(gt=0, le=1, description="mSPRT mixing scale: the difference the sequential test "
                                                       "is tuned to find fastest")]


class ArmWeight(BaseModel):
    name: str
    weight: float = Field(description="configured weight (relative)")
    share: float = Field(description="percent of the route's randomised traffic")


class ExperimentSummary(BaseModel):
    name: str
    route: str
    arms: list[ArmWeight]
    policy_version: int
    since: float | None = Field(description="since when these weights are in force (unix time of the first "
                                            "verification under them); null before any verification under them")


class ExperimentList(BaseModel):
    experiments: list[ExperimentSummary]


def _since(history: list, weights: dict[str, float]) -> float | None:
    """The applied time of the oldest version in the newest run of versions with exactly ``weights``."""
    since = None
    for entry in history:  # ordered by version
        since = (since or entry.applied_at) if entry.weights == weights else None
    return since


async def _report(request: Request, tenant: str, name: str, since: float | None, confidence: float,
                  threshold: float | None, tau: float) -> ExperimentReport:
    policy = request.app.state.policy.current
    route = next((r for r in policy.spec.routes if policy.experiment(r) == name), None)
    if route is None:
        names = sorted(policy.experiment(r) for r in policy.spec.routes)
        raise NotFound(f"no experiment {name!r} (experiments: {names})")
    store = request.app.state.audit_store
    rows = await store.experiment_rows(route, tenant, since=since)
    first = await store.first_assignments(route, tenant, since=since)
    history = {h.version: h.weights for h in await store.policy_history(route)}
    if threshold is None:
        threshold = request.app.state.settings.default_threshold
    return build_report(name, route, rows, policy.weights(route), generated_at=time.time(), since=since,
                        confidence=confidence, first_assignments=first, weight_history=history, threshold=threshold,
                        tau=tau)


def build_router() -> APIRouter:
    """The experiments API; the app includes it with ``app.include_router(build_router())``."""
    api = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=ERRORS)

    @api.get("", response_model=ExperimentList, summary="The experiments: name, route, arms, weights in force, since")
    async def list_experiments(request: Request, _p: ClientAuth) -> ExperimentList:
        policy = request.app.state.policy.current
        store = request.app.state.audit_store
        out = []
        for route, spec in policy.spec.routes.items():
            weights = policy.weights(route)
            total = sum(w for w in weights.values() if w > 0) or 1.0
            out.append(ExperimentSummary(
                name=policy.experiment(route), route=route, policy_version=policy.version,
                arms=[ArmWeight(name=a.name, weight=a.weight, share=100.0 * max(a.weight, 0.0) / total)
                      for a in spec.arms],
                since=_since(await store.policy_history(route), weights)))
        return ExperimentList(experiments=out)

    @api.get("/{name}", response_model=ExperimentReport, summary="A/B report of an experiment (JSON)",
             responses={404: {"description": "no such experiment"}},
             description="Over randomised rows (pinned, fallback, shadow and migration rows counted apart), with "
                         "subjects as the unit: per-arm accept rates with cluster-robust intervals; with labelled "
                         "outcomes FAR, FRR, EER and FRR at FAR 1 % per arm; each arm compared with the first "
                         "(control) by a fixed-horizon subject-level test, the request-level test (secondary) and "
                         "an always-valid mSPRT p-value; SRM over subjects first assigned in the window against the "
                         "weights in force when each was assigned.")
    async def experiment_json(request: Request, p: ClientAuth, name: str = NAME, since: Since = None,
                              confidence: Confidence = 0.95, threshold: Threshold = None,
                              tau: Tau = DEFAULT_TAU) -> ExperimentReport:
        return await _report(request, p.tenant, name, since, confidence, threshold, tau)

    @api.get("/{name}/report", response_class=HTMLResponse, summary="A/B report of an experiment (HTML page)",
             responses={404: {"description": "no such experiment"}},
             description="The same report as a self-contained page with charts (no scripts, works offline).")
    async def experiment_html(request: Request, p: ClientAuth, name: str = NAME, since: Since = None,
                              confidence: Confidence = 0.95, threshold: Threshold = None,
                              tau: Tau = DEFAULT_TAU) -> HTMLResponse:
        return HTMLResponse(render_page(await _report(request, p.tenant, name, since, confidence, threshold, tau)))

    return api
