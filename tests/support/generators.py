"""Stand-ins for the explainer's generator (the vLLM engine) in tests that need no model."""

from __future__ import annotations

from collections.abc import AsyncIterator

from llm_serving.generator import GenerationChunk, GenerationRequest


class StubGenerator:
    """A ready generator with nothing to start or close; subclasses say what ``generate`` does."""

    model = "stub"
    backend = "test"
    ready = True

    def is_ready(self) -> bool:
        return self.ready

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise NotImplementedError
        yield  # an async generator, like the real one
