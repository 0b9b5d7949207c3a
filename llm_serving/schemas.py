"""Wire schemas of the explainer pod. Imported by the router: pydantic only, no vLLM."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


# Requests are strict: JSON types as the schema says (no "1" for 1, no 0 for false), nothing extra.
class ModalityFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    modality: Literal["face", "fingerprint"]
    distance: int = Field(ge=0, le=128, description="Hamming distance of 128-bit codes")
    arm: str = Field(max_length=64)
    model_version: str = Field(max_length=32)
    precision: str = Field(max_length=16)
    backend: str = Field(max_length=32)


class AuditFacts(BaseModel):
    """The facts of one verification decision: all the explainer may state."""

    model_config = ConfigDict(extra="forbid", strict=True)
    audit_id: str = Field(min_length=1, max_length=64)
    decision: Literal["accept", "reject"]
    threshold: float = Field(ge=5, le=50)
    fused_distance: float = Field(ge=0, le=128)
    modalities: list[ModalityFacts] = Field(min_length=1, max_length=2)


class ExplainRequest(BaseModel):
    """POST /v1/explain. ``stream`` or ``Accept: text/event-stream`` selects SSE."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"record": {
        "audit_id": "a-1", "decision": "accept", "threshold": 30, "fused_distance": 12,
        "modalities": [{"modality": "face", "distance": 12, "arm": "v1", "model_version": "1",
                        "precision": "int8", "backend": "hasher-face-v1"}]}}]})
    record: AuditFacts
    stream: bool = False


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case, stable: e.g. invalid_request, payload_too_large, not_ready")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Explanation(BaseModel):
    audit_id: str
    text: str
    source: Literal["model", "template"]
    reason: str | None = Field(None, description="why the template was used, when it was")
    model: str
    backend: str  # "vllm-cpu" | "vllm-cuda"
    prompt_tokens: int = 0
    generated_tokens: int = 0


# SSE from POST /v1/explain (stream=true) and the router's GET /v1/audit/{id}/explanation:
#   event: delta   data: {"text": "..."}            incremental text, zero or more
#   event: final   data: <Explanation JSON>          exactly one, last; text is the checked text
#   event: error   data: {"error": {"code", "message"}}
# A client must display `final.text`: when grounding fails after deltas were sent, final carries
# the template text with source "template".
