"""The real explainer process: vLLM CPU with the default SmolLM2-135M-Instruct model.

All tests share the session's one process (conftest.py). The model is small and sometimes
mixes facts up; whichever source answers, the text must be grounded in the record.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import httpx
import openai
import pytest

from llm_serving.client import ExplainerClient, ExplainerRejected
from llm_serving.schemas import AuditFacts, Explanation
from llm_serving.sentences import check_complete, plan

_spec = importlib.util.spec_from_file_location("llm_records", Path(__file__).with_name("records.py"))
records = importlib.util.module_from_spec(_spec)
sys.modules["llm_records"] = records
_spec.loader.exec_module(records)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
MODEL = "SmolLM2-135M-Instruct"


def assert_grounded(result: Explanation, facts: AuditFacts) -> None:
    assert result.audit_id == facts.audit_id
    assert (result.model, result.backend) == (MODEL, "vllm-cpu")
    assert check_complete(result.text, facts) is None, result.text
    assert result.model_sentences + result.template_sentences == len(plan(facts))
    if result.source == "template":
        assert result.template_sentences > 0 and result.reason
    else:
        assert result.reason is None and result.generated_tokens > 0 and result.prompt_tokens > 0


@pytest.mark.parametrize("facts", [records.ACCEPTED, records.REJECTED, records.MULTIMODAL])
async def test_explanations_of_accepted_and_rejected_records(explainer_url: str, facts: AuditFacts) -> None:
    async with httpx.AsyncClient() as http:
        result = await ExplainerClient(http).explain(explainer_url, facts, timeout_s=120)
    assert_grounded(result, facts)


async def test_accepted_record_is_explained_by_the_model(explainer_url: str) -> None:
    # With greedy decoding and the accept example last, the default model grounds this record.
    async with httpx.AsyncClient() as http:
        result = await ExplainerClient(http).explain(explainer_url, records.ACCEPTED, timeout_s=120)
    assert result.source == "model", result.reason
    assert "12" in result.text and "30" in result.text


async def test_streaming_yields_one_checked_sentence_per_delta(explainer_url: str) -> None:
    events: list[tuple[str, dict]] = []
    async with httpx.AsyncClient() as http:
        async for event in ExplainerClient(http).stream(explainer_url, records.ACCEPTED, timeout_s=120):
            events.append(event)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "final" and kinds.count("final") == 1
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert len(deltas) == len(plan(records.ACCEPTED))
    final = Explanation.model_validate(events[-1][1])
    assert_grounded(final, records.ACCEPTED)
    assert "".join(deltas) == final.text  # nothing streamed that the final text does not hold


async def test_eight_parallel_requests_complete(explainer_url: str) -> None:
    facts = [records.ACCEPTED.model_copy(update={"audit_id": f"par-{i}"}) for i in range(4)]
    facts += [records.REJECTED.model_copy(update={"audit_id": f"par-{i}"}) for i in range(4, 8)]
    async with httpx.AsyncClient() as http:
        client = ExplainerClient(http)
        results = await asyncio.wait_for(
            asyncio.gather(*(client.explain(explainer_url, f, timeout_s=120) for f in facts)), 180
        )
    assert [r.audit_id for r in results] == [f.audit_id for f in facts]
    for result, f in zip(results, facts, strict=True):
        assert_grounded(result, f)


async def test_bad_input_is_rejected_with_4xx(explainer_url: str) -> None:
    impossible = records.ACCEPTED.model_copy(update={"decision": "reject"})
    async with httpx.AsyncClient() as http:
        with pytest.raises(ExplainerRejected) as info:
            await ExplainerClient(http).explain(explainer_url, impossible, timeout_s=30)
        missing = await http.post(f"{explainer_url}/v1/explain", json={"record": {"audit_id": "x"}}, timeout=30)
        oversized = await http.post(f"{explainer_url}/v1/explain", content=b"x" * 100_000, timeout=30)
        bad_chat = await http.post(f"{explainer_url}/v1/chat/completions", json={"messages": "nope"}, timeout=30)
    assert info.value.status_code == 422 and info.value.code == "impossible_record"
    assert missing.status_code == 422 and "decision" in missing.json()["error"]["message"]
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "payload_too_large"
    assert bad_chat.status_code == 422 and "error" in bad_chat.json()  # a schema error, as everywhere


async def test_openai_client_chat_completions_and_models(explainer_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{explainer_url}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
        )
        assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, temperature=0,
            stream=True,
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        assert len(pieces) >= 3
        completion = await client.completions.create(model=MODEL, prompt="The sky is", max_tokens=6, temperature=0)
        assert completion.choices[0].text and completion.usage.completion_tokens > 0
        text_stream = await client.completions.create(
            model=MODEL, prompt="One, two,", max_tokens=6, temperature=0, stream=True
        )
        assert len([c async for c in text_stream if c.choices and c.choices[0].text]) >= 2
    finally:
        await client.close()


async def test_metrics_include_vllm_and_ours(explainer_url: str) -> None:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{explainer_url}/metrics", timeout=30)).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:generation_tokens_total",
                 "servestack_explainer_requests_total", "servestack_explainer_time_to_first_token_seconds_bucket"):
        assert name in text, name
    assert f'servestack_explainer_engine_info{{backend="vllm-cpu",model="{MODEL}"}} 1.0' in text
