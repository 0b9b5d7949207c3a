"""Wire schemas of the explainer pod. Imported by the router: pydantic only, no vLLM."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["face", "fingerprint"]


# Requests are strict: JSON types as the schema says (no "1" for 1, no 0 for false), nothing extra.
class ModalityFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    modality: Modality
    distance: int = Field(ge=0, le=128, description="Hamming distance of 128-bit codes")
    arm: str = Field(max_length=64)
    model_version: str = Field(max_length=32)
    precision: str = Field(max_length=16)
    backend: str = Field(max_length=32)
    fallbacks: list[str] = Field(default_factory=list, max_length=8,
                                 description="backends that failed before the serving one")
    canary: bool = Field(False, description="the arm is a canary (not the route's first arm)")


class AuditFacts(BaseModel):
    """The facts of one decision: all the explainer may state.

    ``kind`` "verification": the codes were compared (1-2 modalities, a fused distance).
    ``kind`` "subject_locked": the subject was throttled after repeated rejects; nothing was
    compared, so there are no modalities and no fused distance, and the decision is reject.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    audit_id: str = Field(min_length=1, max_length=64)
    kind: Literal["verification", "subject_locked"] = "verification"
    decision: Literal["accept", "reject"]
    threshold: float = Field(ge=5, le=50)
    threshold_source: Literal["default", "client"] = Field(
        "default", description="client: the request overrode the router's default threshold")
    fused_distance: float | None = Field(None, ge=0, le=128)
    modalities: list[ModalityFacts] = Field(default_factory=list, max_length=2)
    missing_modalities: list[Modality] = Field(
        default_factory=list, max_length=1, description="a modality the decision was made without")

    @model_validator(mode="after")
    def _kind_fields(self) -> AuditFacts:
        if self.kind == "subject_locked":
            if self.modalities or self.fused_distance is not None or self.decision != "reject":
                raise ValueError("a subject_locked record is a reject without modalities or fused_distance")
            return self
        if not self.modalities:
            raise ValueError("a verification record needs at least one modality")
        if self.fused_distance is None:
            raise ValueError("a verification record needs fused_distance")
        if set(self.missing_modalities) & {m.modality for m in self.modalities}:
            raise ValueError("a missing modality cannot also be present")
        return self


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
    model_sentences: int = Field(0, description="sentences written by the model (the rest: template)")
    template_sentences: int = 0
    check_failures: list[str] = Field(default_factory=list, description="sentence checks that failed, model ones")
    first_sentence_s: float | None = Field(None, description="seconds until the first checked sentence")


# SSE from POST /v1/explain (stream=true) and the router's GET /v1/audit/{id}/explanation:
#   event: delta   data: {"text": "..."}            one checked sentence (with its leading space), zero or more
#   event: final   data: <Explanation JSON>          exactly one, last; text is the checked text
#   event: error   data: {"error": {"code", "message"}}
# A delta is sent only after its sentence passed the check, so the concatenated deltas are always
# a prefix of `final.text`; when the model fails a later sentence, the template completes the text.
