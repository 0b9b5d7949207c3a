"""``POST /v1/audit/{audit_id}/outcome``: label a verification genuine or impostor, after the fact.

The experiment report turns labelled outcomes into FAR and FRR per arm. Labelling is
idempotent: the same label again is a 200 that changes nothing; the other label on a labelled
record is a 409 ``outcome_conflict`` and the first label stays (correct a mistake by hand, on
purpose, not by a retry racing another). The record must be one the caller can read.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from router.deps import ClientAuth
from router.endpoints import AUDIT_ID, ERRORS
from router.errors import NotFound, OutcomeConflict
from router.schemas import ErrorResponse

outcomes = APIRouter(prefix="/v1", tags=["audit"], responses=ERRORS)


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    genuine: StrictBool = Field(description="true: the probe was the claimed subject; false: an impostor")


class OutcomeResponse(BaseModel):
    audit_id: str
    genuine: bool
    stored: bool = Field(description="false when the record already carried this label (idempotent repeat)")


@outcomes.post("/audit/{audit_id}/outcome", response_model=OutcomeResponse,
               summary="Label a verification genuine or impostor (ground truth for FAR/FRR)",
               responses={404: {"model": ErrorResponse, "description": "no such audit record"},
                          409: {"model": ErrorResponse, "description": "already labelled with the other outcome"}})
async def post_outcome(body: OutcomeBody, request: Request, p: ClientAuth, audit_id: str = AUDIT_ID
                       ) -> OutcomeResponse:
    store = request.app.state.audit_store
    if await store.get(audit_id, p.tenant) is None:
        raise NotFound(f"no audit record {audit_id!r}")
    result = await store.set_outcome(audit_id, body.genuine)
    if result == "conflict":
        raise OutcomeConflict(f"audit record {audit_id!r} is already labelled "
                              f"{'impostor' if body.genuine else 'genuine'}; the label was kept")
    return OutcomeResponse(audit_id=audit_id, genuine=body.genuine, stored=result == "stored")
