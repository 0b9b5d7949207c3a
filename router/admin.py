"""Admin API (admin scope): read and replace the traffic policy, move a route's weights.

Changes are validated whole, written to the policy file atomically (so a restart keeps them and
other replicas reading the same ConfigMap-less file agree) and put in force without touching
requests in flight.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import ValidationError

from router.deps import AdminAuth
from router.endpoints import ERRORS
from router.errors import NotFound, PolicyInvalid
from router.policy import TrafficPolicy
from router.policy_store import validate_policy
from router.schemas import WeightsPatch

admin = APIRouter(prefix="/admin/v1", tags=["admin"], responses=ERRORS)


def _view(policy: TrafficPolicy) -> dict[str, Any]:
    return {"version": policy.version, "policy": policy.spec.model_dump(mode="json", exclude_none=True)}


@admin.get("/policy", summary="The policy in force and its version")
async def get_policy(request: Request, _p: AdminAuth) -> dict[str, Any]:
    return _view(request.app.state.policy.current)


@admin.put("/policy", summary="Replace the whole policy (validated; in force at once, persisted)")
async def put_policy(request: Request, _p: AdminAuth, body: dict[str, Any] = Body(
        ..., examples=[{"backends": {"hasher-face-v1": {"endpoints": ["http://127.0.0.1:8101"]}},
                        "routes": {"face": {"arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": 100}]}}}],
)) -> dict[str, Any]:
    holder = request.app.state.policy
    # Routes that keep their experiment keep their subjects' buckets: weight changes move only
    # the subjects they must (an explicit ``allocation`` in the body wins).
    spec = validate_policy(body, "policy").with_allocations_from(holder.current.spec)
    return _view(await holder.replace(spec))


@admin.patch("/routes/{route}/weights", summary="Set the weights of some arms of a route")
async def patch_weights(route: str, body: WeightsPatch, request: Request, _p: AdminAuth) -> dict[str, Any]:
    holder = request.app.state.policy
    try:
        spec = holder.current.spec.with_weights(route, body.weights)
    except KeyError:
        raise NotFound(f"no route {route!r}") from None
    except (ValueError, ValidationError) as exc:
        raise PolicyInvalid(f"route {route!r}: {exc}") from exc
    return _view(await holder.replace(spec))
