"""Public wire schemas of the router's API v1 (strict: unknown fields are refused)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from router.config import THRESHOLD_MAX, THRESHOLD_MIN
from router.errors import InvalidInput, PayloadTooLarge
from trt_serving.schemas import BASE64_PATTERN

Modality = Literal["face", "fingerprint"]
Decision = Literal["accept", "reject"]
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Documented for the OpenAPI schema; check_image enforces them (400 invalid_input, 413 above the size
# limit, which router.openapi_contract writes into the schema from the settings).
_IMAGE_SCHEMA: JsonDict = {"pattern": BASE64_PATTERN, "minLength": 4}
# At least one modality: the schema's anyOf says what _some_modality enforces.
_SOME_MODALITY: JsonDict = {
    "anyOf": [{"required": [m], "properties": {m: {"type": "string"}}} for m in ("face", "fingerprint")]}


class SubjectImages(_Strict):
    """A subject and one image per modality (base64-encoded JPEG/PNG), at least one modality."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_SOME_MODALITY)
    subject_id: str = Field(pattern=SUBJECT_PATTERN, examples=["alice"])
    face: str | None = Field(None, description="base64 image of the face", json_schema_extra=_IMAGE_SCHEMA)
    fingerprint: str | None = Field(None, description="base64 image of the fingerprint",
                                    json_schema_extra=_IMAGE_SCHEMA)

    @model_validator(mode="after")
    def _some_modality(self) -> SubjectImages:
        if self.face is None and self.fingerprint is None:
            raise ValueError("send at least one of face, fingerprint")
        return self

    def images(self) -> dict[str, str]:
        return {m: v for m, v in (("face", self.face), ("fingerprint", self.fingerprint)) if v is not None}


class EnrollRequest(SubjectImages):
    """Enrol a subject; an enrolled one only with ``replace`` (scope ``enroll:replace``)."""

    replace: bool = Field(False, description="replace the templates of an enrolled subject (needs the "
                                             "enroll:replace scope); without it an enrolled subject is 409")


class VerifyRequest(SubjectImages):
    """Verify a subject against its templates; ``threshold`` overrides the default within 5..50."""

    threshold: float | None = Field(
        None, ge=THRESHOLD_MIN, le=THRESHOLD_MAX,
        description="accept when the fused Hamming distance <= threshold (default: the router's default_threshold)",
    )


class HashApiRequest(_Strict):
    modality: Modality
    images: list[Annotated[str, Field(json_schema_extra=_IMAGE_SCHEMA)]] = Field(
        min_length=1, max_length=64, description="base64 images (at most max_images_per_hash)")
    subject_id: str | None = Field(None, pattern=SUBJECT_PATTERN, description="sticky key (optional)")


class TemplateStored(_Strict):
    modality: Modality
    arm: str
    backend: str
    model_version: str
    precision: str


class TemplateFailed(_Strict):
    modality: Modality
    arm: str
    message: str


class EnrollResponse(_Strict):
    subject_id: str
    templates: list[TemplateStored]
    failed: list[TemplateFailed] = Field(default_factory=list, description="secondary arms that could not enrol")
    trace_id: str


class ModalityResult(_Strict):
    modality: Modality
    route: str
    arm: str
    arm_reason: str = Field(description="pinned | sticky | random | coverage (no template on the chosen arm)")
    backend: str = Field(description="the backend that served (after any fallback)")
    model_version: str
    precision: str
    engine_backend: str
    distance: int = Field(ge=0, le=128)
    decision: Decision = Field(description="this modality alone: distance <= threshold")
    latency_ms: float
    attempts: int
    fallbacks: list[str] = Field(default_factory=list, description="backends tried before the serving one")


class AuditRecord(_Strict):
    """One verification decision as stored in the audit log (no images, no codes)."""

    audit_id: str
    created_at: float
    trace_id: str
    subject_id: str
    decision: Decision
    threshold: float
    fused_distance: float = Field(description="mean of the modality distances")
    latency_ms: float
    modalities: list[ModalityResult]
    policy_version: int | None = Field(None, description="version of the traffic policy that chose the arms")


VerifyResponse = AuditRecord


class HashApiResponse(_Strict):
    modality: Modality
    arm: str
    backend: str
    model_version: str
    precision: str
    engine_backend: str
    codes: list[str]
    fallbacks: list[str] = Field(default_factory=list)
    trace_id: str


class ErrorBody(_Strict):
    code: str
    message: str


class ErrorResponse(_Strict):
    error: ErrorBody


class WeightsPatch(_Strict):
    weights: dict[str, float] = Field(min_length=1)


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def check_image(value: str, field: str, max_bytes: int) -> str:
    """``value`` itself once it is strict base64 (alphabet, padding, length) of at most ``max_bytes``.

    The image is forwarded to the pod as this text: checked here once, never decoded and
    re-encoded by the router (the pod decodes it). Only the base64 alphabet passes, so the text
    needs no escaping in the JSON body written to the pod.
    """
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise PayloadTooLarge(f"{field}: image larger than {max_bytes} bytes")
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise InvalidInput(f"{field}: not valid base64")
    size = len(value) // 4 * 3 - (len(value) - len(value.rstrip("=")))
    if size == 0:
        raise InvalidInput(f"{field}: empty image")
    if size > max_bytes:
        raise PayloadTooLarge(f"{field}: image larger than {max_bytes} bytes")
    return value
