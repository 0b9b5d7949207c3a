"""Admin API (admin scope): read and replace the traffic policy, move a route's weights.

Changes are validated whole, written to the policy source (the policy file, or the ConfigMap in
Kubernetes) by compare-and-swap and put in force without touching requests in flight; the other
replicas pick them up from the source within ``policy_poll_s``.

Versioned writes: ``GET /admin/v1/policy`` answers an ``ETag``; ``PUT`` and ``PATCH`` honour
``If-Match`` and answer 412 ``version_conflict`` when the policy changed since. Without
``If-Match`` a write still goes through, applied to the latest policy (a PATCH never reverts
someone else's concurrent change to other arms or routes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header, Request, Response
from pydantic import ValidationError

from router.deps import AdminAuth
from router.endpoints import ERRORS
from router.errors import NotFound, PolicyInvalid
from router.policy import PolicySpec
from router.policy_store import PolicyHolder, validate_policy
from router.schemas import WeightsPatch

admin = APIRouter(prefix="/admin/v1", tags=["admin"], responses=ERRORS)

IF_MATCH = Header(None, alias="If-Match", description='an ETag from GET /admin/v1/policy (or "*"); '
                                                       "412 version_conflict when the policy changed since")


def _view(holder: PolicyHolder, response: Response) -> dict[str, Any]:
    policy = holder.current
    response.headers["ETag"] = f'"{holder.etag}"'
    return {"version": policy.version, "etag": holder.etag,
            "policy": policy.spec.model_dump(mode="json", exclude_none=True)}


@admin.get("/policy", summary="The policy in force, its version and ETag")
async def get_policy(request: Request, response: Response, _p: AdminAuth) -> dict[str, Any]:
    return _view(request.app.state.policy, response)


@admin.put("/policy", summary="Replace the whole policy (validated; If-Match honoured; in force at once, persisted)",
           responses={412: {"description": "If-Match does not match the policy in force"}})
async def put_policy(request: Request, response: Response, _p: AdminAuth, body: dict[str, Any] = Body(
        ..., examples=[{"backends": {"hasher-face-v1": {"endpoints": ["http://127.0.0.1:8101"]}},
                        "routes": {"face": {"arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": 100}]}}}],
), if_match: str | None = IF_MATCH) -> dict[str, Any]:
    spec = validate_policy(body, "policy")
    holder = request.app.state.policy
    # Routes that keep their experiment keep their subjects' buckets: weight changes move only
    # the subjects they must (an explicit ``allocation`` in the body wins).
    await holder.update(lambda latest: spec.with_allocations_from(latest), if_match)
    return _view(holder, response)


@admin.patch("/routes/{route}/weights", summary="Set the weights of some arms of a route (If-Match honoured)",
             responses={412: {"description": "If-Match does not match the policy in force"}})
async def patch_weights(route: str, body: WeightsPatch, request: Request, response: Response, _p: AdminAuth,
                        if_match: str | None = IF_MATCH) -> dict[str, Any]:
    def change(latest: PolicySpec) -> PolicySpec:
        try:
            return latest.with_weights(route, body.weights)
        except KeyError:
            raise NotFound(f"no route {route!r}") from None
        except (ValueError, ValidationError) as exc:
            raise PolicyInvalid(f"route {route!r}: {exc}") from exc

    holder = request.app.state.policy
    await holder.update(change, if_match)
    return _view(holder, response)
