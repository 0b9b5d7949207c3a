"""Schemathesis against the explainer app on 127.0.0.1: POST /v1/explain behaves as its OpenAPI says.

The app is the real one (body limit, parsing, consistency checks, grounding, template fallback,
JSON and SSE); only the language model is a stand-in that answers free text, which grounding
refuses, so each accepted request ends in the template explanation (200, source "template").
Every phase and check, 12 cases per operation; zero failures. One tuning, because JSON Schema
cannot say "fused_distance is the mean of the distances": a schema-valid but impossible record
may get the documented 422.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from llm_serving.app import create_app
from llm_serving.config import ExplainerSettings
from llm_serving.generator import GenerationChunk, GenerationRequest
from tests.openapi_fuzz import assert_clean, fuzz, serve
from tests.support.generators import StubGenerator


class FreeText(StubGenerator):
    """A ready model that never follows the JSON format asked for."""

    model = "free-text"
    backend = "test"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk(text="It matched.", prompt_tokens=10, generated_tokens=3, finished=True,
                              finish_reason="stop")


CONFIG = """
[[operations]]
include-path = "/v1/explain"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"""


def test_explain_matches_its_openapi_schema(tmp_path: Path) -> None:
    app = create_app(ExplainerSettings(_env_file=None), generator=FreeText(),  # type: ignore[call-arg]
                     include_global_metrics=False)
    with serve(app) as url:
        run = fuzz(url, tmp_path, include_paths=("/v1/explain",), config=CONFIG, max_examples=12)
    assert_clean(run, operations=1)
    # The schema's example is a consistent record: the examples phase got the template explanation.
    assert run.report["phases"]["examples"]["status"] == "success", run.summary()
