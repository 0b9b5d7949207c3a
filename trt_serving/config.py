"""Hasher pod settings (env prefix ``SERVESTACK_HASHER_``), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trt_serving.engines.base import BACKENDS, PRECISIONS

# What "precision: auto" means per backend. OpenVINO int8: measured on 2 cores here, ResNet50
# batch 8, 147 img/s vs 45 for bf16 (no AMX on this CPU: bf16 gains nothing) and 27 for ONNX
# Runtime fp32, at bit agreement 0.982 with fp32 (ResNet18: 0.990), above the 0.97 floor. An int8
# build under the floor is refused and the next candidate (bf16) is tried: see selection.py.
AUTO_PRECISION = {"openvino": "int8", "onnxruntime": "fp32", "torch": "fp32", "cuda": "fp16", "tensorrt": "fp16"}


class HasherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVESTACK_HASHER_", extra="ignore")

    model: Literal["face", "fingerprint"] = "face"
    version: str = "1"
    host: str = "127.0.0.1"
    port: int = Field(default=8101, ge=0, le=65535)
    # The Open Inference Protocol over gRPC beside HTTP (oip_grpc_server.py): `servestack up` and the
    # Kubernetes manifests set it on every pod; unset (in-process apps of the tests): HTTP only.
    grpc_port: int | None = Field(default=None, ge=0, le=65535, description="OIP gRPC port (0: any free)")
    log_level: str = "info"
    cache_dir: Path = Path(".servestack/cache")
    threads: int = Field(default=2, ge=1, description="engine threads")
    decode_workers: int = Field(default=2, ge=1, description="threads decoding/preprocessing images")

    backend: str = "openvino"
    precision: str = "auto"
    # Tried in order when the preferred engine cannot load: "backend" or "backend:precision".
    fallbacks: Annotated[list[str], NoDecode] = ["onnxruntime:fp32", "torch:fp32"]
    artifact_dir: Path | None = Field(default=None, description="serve this built artifact first")
    weights: Path | None = Field(default=None, description="user checkpoint (see model/hasher.py)")
    build_missing: bool = Field(default=True, description="build a missing artifact at start-up")
    agreement_floor: float = Field(default=0.97, ge=0.0, le=1.0)

    max_batch_size: int = Field(default=32, ge=1, le=256)
    max_queue_delay_us: int = Field(default=2000, ge=0)
    max_queue_size: int = Field(default=256, ge=1, description="requests waiting; more -> 503")
    request_timeout_s: float = Field(default=10.0, gt=0, description="per-request deadline")
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Freeze the objects alive after the engine loads out of the cyclic GC (see app._load): the
    # ~220k start-up objects (torch, OpenVINO, FastAPI) made each full collection take ~165 ms with
    # the GIL held, stalling the event loop and the decode workers under load.
    gc_freeze: bool = True

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> HasherSettings:
        for spec in [f"{self.backend}:{self.precision}", *self.fallbacks]:
            backend, _, precision = spec.partition(":")
            if backend not in BACKENDS:
                raise ValueError(f"unknown backend {backend!r} in {spec!r}; known: {', '.join(BACKENDS)}")
            if precision and precision != "auto" and precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r} in {spec!r}; known: {', '.join(PRECISIONS)}")
        return self

    def candidates(self) -> list[tuple[str, str]]:
        """(backend, precision) in the order to try: the preferred engine, then the fallbacks."""
        out: list[tuple[str, str]] = []
        for spec in [f"{self.backend}:{self.precision}", *self.fallbacks]:
            backend, _, precision = spec.partition(":")
            if not precision or precision == "auto":
                precision = AUTO_PRECISION[backend]
            if (backend, precision) not in out:
                out.append((backend, precision))
        return out
