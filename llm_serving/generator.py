"""The seam between the explanation logic and the model: a ``Generator`` streams text.

The shipped implementation is ``llm_serving.vllm_generator.VllmGenerator`` (vLLM's AsyncLLM);
tests inject their own to make the model say something specific (e.g. a wrong number).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    seed: int | None = None
    # JSON schema the output must follow (guided decoding); None = free text.
    json_schema: dict[str, Any] | None = None
    # Regular expression the output must match (guided decoding); exclusive with json_schema.
    regex: str | None = None
    # Text the assistant's answer already starts with (checked sentences of an earlier attempt):
    # the model continues after it; the chunks carry only the continuation.
    assistant_prefix: str = ""
    trace_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationChunk:
    """One step of a generation: new text plus running token counts."""

    text: str
    prompt_tokens: int
    generated_tokens: int
    finished: bool = False
    finish_reason: str | None = None


@runtime_checkable
class Generator(Protocol):
    """Streams one generation; closing the iterator early must abort it (client gone, deadline)."""

    @property
    def model(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def is_ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...
