"""The explainer app in-process with generators injected at the seam (no vLLM start).

Covers what the real model cannot be made to do on demand: state a wrong number (grounding
fallback), hang past the deadline, lose its client mid-generation.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_serving.app import create_app
from llm_serving.config import ExplainerSettings
from llm_serving.generator import GenerationChunk, GenerationRequest
from llm_serving.sentences import check_complete
from tests.support.generators import StubGenerator
from tests.support.sse import sse_events
from tracing import setup_telemetry

_spec = importlib.util.spec_from_file_location("llm_records", Path(__file__).with_name("records.py"))
records = importlib.util.module_from_spec(_spec)
sys.modules["llm_records"] = records
_spec.loader.exec_module(records)


class ScriptedGenerator(StubGenerator):
    """Streams a fixed output one character at a time; records requests and early closes."""

    def __init__(self, outputs: list[str], delay_s: float = 0.0, ready: bool = True) -> None:
        self.outputs = outputs
        self.delay_s = delay_s
        self.ready = ready
        self.requests: list[GenerationRequest] = []
        self.closed_early = 0
        self.started = asyncio.Event()

    model = "scripted"
    backend = "test"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        text = self.outputs[min(len(self.requests), len(self.outputs)) - 1]
        done = False
        self.started.set()
        try:
            for i, ch in enumerate(text):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield GenerationChunk(text=ch, prompt_tokens=100, generated_tokens=i + 1,
                                      finished=i == len(text) - 1)
            done = True
        finally:
            if not done:
                self.closed_early += 1


GOOD = ("The verification was accepted. The face probe had a Hamming distance of 12. "
        "This is at or below the threshold of 30, as required.")
# The second sentence gives the face a wrong distance (guided decoding prevents it; the check must not rely on it).
WRONG_NUMBER = ("The verification was accepted. The face probe had a Hamming distance of 13. "
                "This is at or below the threshold of 30, as required.")
WRONG_CONTINUATION = "The face probe had a Hamming distance of 13. This is at or below the threshold of 30."


class Harness:
    def __init__(self, generator: ScriptedGenerator, **overrides: object) -> None:
        self.spans = InMemorySpanExporter()
        telemetry = setup_telemetry("servestack-explainer", "test")
        telemetry.add_span_processor(SimpleSpanProcessor(self.spans))
        settings = ExplainerSettings(_env_file=None, **overrides)  # type: ignore[call-arg]
        self.generator = generator
        self.app = create_app(settings, generator=generator, telemetry=telemetry, include_global_metrics=False)

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        await self.app.state.engine_starter
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://explainer")
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(None, None, None)

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


async def test_model_explanation_is_returned_when_grounded() -> None:
    harness = Harness(ScriptedGenerator([GOOD]))
    async with harness as client:
        resp = await client.post("/v1/explain", json={"record": records.record_json(records.ACCEPTED)})
    assert resp.status_code == 200
    body = resp.json()
    assert body["source"] == "model" and body["reason"] is None
    assert body["text"] == GOOD
    assert (body["model"], body["backend"]) == ("scripted", "test")
    assert body["generated_tokens"] == len(GOOD) and body["prompt_tokens"] == 100
    assert (body["model_sentences"], body["template_sentences"], body["check_failures"]) == (3, 0, [])
    assert body["first_sentence_s"] > 0
    assert len(harness.generator.requests) == 1
    guide = harness.generator.requests[0].regex
    assert re.fullmatch(guide, GOOD) and not re.fullmatch(guide, WRONG_NUMBER)  # only the record's numbers
    assert harness.metric("servestack_explainer_requests_total", source="model", status="ok") == 1
    # Span export health: the counter is there (None would mean not exported), nothing dropped.
    assert harness.app.state.metrics.registry.get_sample_value("servestack_explainer_spans_dropped_total") == 0


async def test_wrong_sentence_retries_after_the_checked_ones_then_the_template_completes() -> None:
    harness = Harness(ScriptedGenerator([WRONG_NUMBER, WRONG_CONTINUATION]))
    async with harness as client:
        resp = await client.post("/v1/explain", json={"record": records.record_json(records.ACCEPTED)})
    body = resp.json()
    assert resp.status_code == 200
    assert body["source"] == "template"
    assert body["check_failures"] == [
        "attempt 1: distance:face sentence lacks '12'",
        "attempt 2: distance:face sentence lacks '12'",
    ]
    assert body["reason"] == "; ".join(body["check_failures"])
    # The checked first sentence stays; the template states the rest.
    assert body["text"].startswith("The verification was accepted. The face probe differed from the enrolled "
                                   "template in 12 of 128 bits") and "13" not in body["text"]
    assert (body["model_sentences"], body["template_sentences"]) == (1, 2)
    assert check_complete(body["text"], records.ACCEPTED) is None
    requests = harness.generator.requests
    assert len(requests) == 2
    assert requests[0].temperature == 0.0 and requests[1].temperature == 0.7 and requests[1].seed is not None
    assert requests[0].assistant_prefix == "" and requests[1].assistant_prefix == "The verification was accepted. "
    assert not re.fullmatch(requests[1].regex, "The verification was accepted.")  # the retry skips it
    assert re.fullmatch(requests[1].regex, GOOD.removeprefix("The verification was accepted. "))
    assert harness.generator.closed_early == 2  # each failing generation is aborted at its bad sentence
    assert harness.metric("servestack_explainer_grounding_failures_total") == 2
    assert harness.metric("servestack_explainer_requests_total", source="template", status="grounding_failed") == 1
    spans = {s.name: s for s in harness.spans.get_finished_spans()}
    assert {"explain.prompt_build", "explain.generation", "explain.grounding_check", "POST /v1/explain"} <= set(spans)
    generation = [s for s in harness.spans.get_finished_spans() if s.name == "explain.generation"]
    assert [s.attributes["explain.attempt"] for s in generation] == [1, 2]
    assert [s.attributes["explain.sentences"] for s in generation] == [3, 2]
    assert generation[0].parent.span_id == spans["POST /v1/explain"].context.span_id
    assert generation[0].attributes["llm.time_to_first_token_s"] >= 0
    checks = [s for s in harness.spans.get_finished_spans() if s.name == "explain.grounding_check"]
    assert [s.attributes["explain.grounded"] for s in checks] == [True, False, False]


async def test_sse_streams_one_checked_sentence_per_delta_then_final() -> None:
    harness = Harness(ScriptedGenerator([GOOD], delay_s=0.001))
    async with harness as client:
        async with client.stream("POST", "/v1/explain", json={"record": records.record_json(records.ACCEPTED),
                                                              "stream": True}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = sse_events((await resp.aread()).decode())
    kinds = [kind for kind, _ in events]
    assert kinds == ["delta", "delta", "delta", "final"]
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert deltas == ["The verification was accepted.", " The face probe had a Hamming distance of 12.",
                      " This is at or below the threshold of 30, as required."]
    assert "".join(deltas) == events[-1][1]["text"] == GOOD


@pytest.mark.parametrize("outputs", [[WRONG_NUMBER, WRONG_CONTINUATION], [WRONG_NUMBER, GOOD[31:]]])
async def test_no_delta_carries_text_the_final_event_does_not_contain(outputs: list[str]) -> None:
    """The model's second sentence is wrong: it is never streamed; the retry or the template follows."""
    harness = Harness(ScriptedGenerator(outputs, delay_s=0.001))
    async with harness as client:
        async with client.stream("POST", "/v1/explain", json={"record": records.record_json(records.ACCEPTED),
                                                              "stream": True}) as resp:
            events = sse_events((await resp.aread()).decode())
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    final = events[-1][1]
    assert events[-1][0] == "final" and [k for k, _ in events].count("final") == 1
    assert "".join(deltas) == final["text"]
    assert all(delta in final["text"] for delta in deltas) and not any("13" in delta for delta in deltas)
    assert check_complete(final["text"], records.ACCEPTED) is None
    recovered = outputs[1] == GOOD[31:]
    assert final["source"] == ("model" if recovered else "template")
    if recovered:
        assert final["text"] == GOOD and final["reason"] is None and len(final["check_failures"]) == 1


async def test_every_decision_kind_is_explained_completely() -> None:
    """subject_locked, fallback, canary, client threshold, a missing modality: each has its sentence."""
    harness = Harness(ScriptedGenerator(["no sentence here"]))
    async with harness as client:
        locked = await client.post("/v1/explain", json={"record": records.record_json(records.LOCKED)})
        combined = await client.post("/v1/explain", json={"record": records.record_json(records.EVERY_KIND)})
    assert locked.status_code == combined.status_code == 200
    assert locked.json()["source"] == combined.json()["source"] == "template"
    assert locked.json()["text"] == ("Verification rejected. The subject was locked after repeated rejections, "
                                     "so no biometric was compared.")
    text = combined.json()["text"]
    for part in ("fallback backend after tensorrt failed", "canary arm; the arm is v2",
                 "The fingerprint was not compared", "set by the client", "at or below the threshold 30"):
        assert part in text
    assert check_complete(text, records.EVERY_KIND) is None


async def test_deadline_falls_back_and_aborts_the_generation() -> None:
    harness = Harness(ScriptedGenerator([GOOD], delay_s=0.05), request_timeout_s=0.3)
    async with harness as client:
        resp = await client.post("/v1/explain", json={"record": records.record_json(records.ACCEPTED)})
    body = resp.json()
    assert body["source"] == "template" and body["reason"].startswith("deadline of 0.3 s exceeded")
    assert harness.generator.closed_early == 1 and len(harness.generator.requests) == 1
    assert harness.metric("servestack_explainer_requests_total", source="template", status="timeout") == 1


async def test_client_disconnect_aborts_the_generation() -> None:
    harness = Harness(ScriptedGenerator([GOOD], delay_s=0.05))
    body = json.dumps({"record": records.record_json(records.ACCEPTED)}).encode()
    gone = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/explain", "raw_path": b"/v1/explain", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    async with harness:
        call = asyncio.create_task(harness.app(scope, receive, send))
        await asyncio.wait_for(harness.generator.started.wait(), 5)
        gone.set()
        await asyncio.wait_for(call, 5)
    assert harness.generator.closed_early == 1
    assert len(harness.generator.requests) == 1  # no retry after the client left


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda r: r.pop("decision"), 422, "invalid_request"),
        (lambda r: r["modalities"][0].update(distance=200), 422, "invalid_request"),
        (lambda r: r.update(threshold=2), 422, "invalid_request"),
        (lambda r: r.update(decision="reject"), 422, "impossible_record"),  # contradicts 12 <= 30
        (lambda r: r.pop("fused_distance"), 422, "invalid_request"),
        (lambda r: r.update(kind="subject_locked"), 422, "invalid_request"),  # a lock compares nothing
        (lambda r: r.update(extra_field=1), 422, "invalid_request"),
        (lambda r: r.update(audit_id="x" * 20_000), 413, "payload_too_large"),
    ],
)
async def test_bad_input_is_a_4xx_with_an_error_body(mutate, status: int, code: str) -> None:
    record = records.record_json(records.ACCEPTED)
    mutate(record)
    harness = Harness(ScriptedGenerator([GOOD]))
    async with harness as client:
        resp = await client.post("/v1/explain", json={"record": record})
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
    assert harness.generator.requests == []


async def test_malformed_json_and_not_ready() -> None:
    harness = Harness(ScriptedGenerator([GOOD], ready=False))
    async with harness as client:
        bad = await client.post("/v1/explain", content=b"{not json", headers={"content-type": "application/json"})
        busy = await client.post("/v1/explain", json={"record": records.record_json(records.ACCEPTED)})
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert ready.status_code == 503 and health.status_code == 200


async def test_metrics_expose_our_names() -> None:
    harness = Harness(ScriptedGenerator([GOOD]))
    async with harness as client:
        await client.post("/v1/explain", json={"record": records.record_json(records.ACCEPTED)})
        text = (await client.get("/metrics")).text
    for name in ("servestack_explainer_requests_total", "servestack_explainer_request_duration_seconds",
                 "servestack_explainer_time_to_first_token_seconds", "servestack_explainer_generated_tokens_total",
                 "servestack_explainer_time_to_first_sentence_seconds",
                 "servestack_explainer_grounding_failures_total"):
        assert name in text
    assert 'servestack_explainer_engine_info{backend="test",model="scripted"} 1.0' in text
