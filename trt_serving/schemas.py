"""Wire schemas of the hasher pod. Imported by the router: httpx + pydantic only, no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["face", "fingerprint"]
CODE_BYTES = 16  # 128-bit hash code


class HashRequest(BaseModel):
    """POST /v1/hash: base64-encoded images (JPEG/PNG/...)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, max_length=64, description="base64 encoded image files")
    include_features: bool = False


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
