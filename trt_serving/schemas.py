"""Wire schemas of the hasher pod. Imported by the router: httpx + pydantic only, no torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["face", "fingerprint"]
CODE_BYTES = 16  # 128-bit hash code
MAX_IMAGES = 64  # per request, on /v1/hash and the Open Inference Protocol alike
# Strict base64 as base64.b64decode(validate=True) reads it: whole 4-character groups, padding only
# at the end. The OpenAPI schema says it; the endpoint enforces it with its own codes (400
# invalid_base64, empty_image), so only the documentation goes through the JSON schema here.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Base64Image = Annotated[str, Field(description="a base64 encoded image file (JPEG, PNG, ...)",
                                   json_schema_extra={"pattern": BASE64_PATTERN, "minLength": 4})]


def base64_length(n_bytes: int) -> int:
    """Characters of the padded base64 text of ``n_bytes`` bytes."""
    return 4 * ((n_bytes + 2) // 3)


# A 16x16 grayscale PNG: the schema's example, a request the pod accepts.
EXAMPLE_IMAGE = ("iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAAAAAA6mKC9AAAAEUlEQVR42mNk4EAFTBwjWgAASdQIGDOfFtMAAAAASUVORK5CYII=")


class HashRequest(BaseModel):
    """POST /v1/hash: base64-encoded images (JPEG/PNG/...)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"images": [EXAMPLE_IMAGE]}]})
    images: list[Base64Image] = Field(min_length=1, max_length=MAX_IMAGES, description="base64 encoded image files")
    include_features: bool = Field(False, strict=True, description="also return the 512-d features")


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case, stable: e.g. not_an_image, invalid_request, overloaded")
    message: str


class ErrorResponse(BaseModel):
    """Every error of /v1/hash (the Open Inference Protocol's /v2 routes use the protocol's own form)."""

    error: ErrorDetail


class EngineInfo(BaseModel):
    """What actually serves: never the configured wish, always the loaded engine."""

    model: Modality
    version: str
    backend: str  # tensorrt | cuda | openvino | onnxruntime | torch
    precision: str  # fp32 | fp16 | bf16 | int8
    fallback_from: list[str] = Field(default_factory=list, description="backends tried and refused")


class HashResponse(BaseModel):
    engine: EngineInfo
    codes: list[str] = Field(description="one 32-hex-digit (128-bit) code per image, in order")
    features: list[list[float]] | None = None
