"""Turn an audit record into a grounded explanation: the core of the pod, free of HTTP.

Flow per record: build the prompt from the template's facts -> generate JSON (decision, prose,
numbers cited) with guided decoding -> grounding check -> on failure one retry at a higher
temperature -> else the template text, marked ``source: "template"`` with the reason. The whole
thing runs under one deadline; a model that is slow, wrong or broken never leaves a caller
without a trustworthy answer.

``events`` streams ``("delta", {"text"})`` while the first attempt's prose is generated and ends
with exactly one ``("final", Explanation)``. Closing the stream early (client gone) closes the
generation, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from opentelemetry import trace

from llm_serving.errors import InvalidInput, NotReady
from llm_serving.facts import check_consistent, template_text
from llm_serving.generator import GenerationRequest, Generator
from llm_serving.grounding import check, explanation_schema, parse_stated
from llm_serving.metrics import ExplainerMetrics
from llm_serving.prompts import build_messages
from llm_serving.schemas import AuditFacts, Explanation
from llm_serving.stream_json import FieldStreamer
from tracing import traced

log = logging.getLogger(__name__)

RETRY_SEED = 1234  # a fixed seed keeps the retry reproducible for a given record


@dataclass(frozen=True)
class ExplainOptions:
    max_tokens: int
    temperature: float
    retry_temperature: float
    timeout_s: float


@dataclass
class _Attempt:
    raw: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_token_s: float | None = None
    error: str | None = None


class ExplainService:
    def __init__(
        self, generator: Generator, options: ExplainOptions, metrics: ExplainerMetrics, tracer: trace.Tracer
    ) -> None:
        self.generator = generator
        self.options = options
        self.metrics = metrics
        self.tracer = tracer

    def validate(self, facts: AuditFacts) -> None:
        """Refuse impossible records (4xx) and requests the engine cannot take yet (503)."""
        problem = check_consistent(facts)
        if problem is not None:
            raise InvalidInput(f"impossible record: {problem}")
        if not self.generator.is_ready():
            raise NotReady("the language model is still loading")

    async def explain(self, facts: AuditFacts) -> Explanation:
        """The final explanation only (the JSON route)."""
        final: Explanation | None = None
        async for event, payload in self.events(facts):
            if event == "final":
                final = Explanation.model_validate(payload)
        assert final is not None, "events() always ends with a final event"
        return final

    async def events(self, facts: AuditFacts) -> AsyncIterator[tuple[str, dict[str, object]]]:
        started = time.perf_counter()
        deadline = started + self.options.timeout_s
        with traced(self.tracer, "explain.prompt_build", {"explain.modalities": len(facts.modalities)}):
            messages = build_messages(facts)
            template = template_text(facts)
        prompt_tokens = generated_tokens = 0
        reasons: list[str] = []
        status = "grounding_failed"
        self.metrics.inflight.inc()
        try:
            for attempt in (1, 2):
                streamer = FieldStreamer("explanation") if attempt == 1 else None
                result = _Attempt()
                async for delta in self._generate(facts, messages, attempt, deadline, started, result, streamer):
                    yield "delta", {"text": delta}
                prompt_tokens += result.prompt_tokens
                generated_tokens += result.generated_tokens
                if result.error is not None:
                    reasons.append(result.error)
                    status = "timeout" if result.error.startswith("deadline") else "error"
                    break
                with traced(self.tracer, "explain.grounding_check", {"explain.attempt": attempt}) as span:
                    try:
                        stated = parse_stated(result.raw)
                        verdict = check(stated, facts)
                        reason = verdict.reason
                    except ValueError as exc:
                        stated, reason = None, str(exc)
                    span.set_attribute("explain.grounded", reason is None)
                    if reason is not None:
                        span.set_attribute("explain.grounding_reason", reason)
                if reason is None and stated is not None:
                    yield "final", self._final(facts, stated.explanation, "model", None, prompt_tokens,
                                               generated_tokens, started, "ok").model_dump()
                    return
                self.metrics.grounding_failures.inc()
                reasons.append(f"attempt {attempt}: {reason}")
            reason_text = "; ".join(reasons)
            log.info("explanation %s falls back to the template: %s", facts.audit_id, reason_text)
            yield "final", self._final(facts, template, "template", reason_text, prompt_tokens, generated_tokens,
                                       started, status).model_dump()
        finally:
            self.metrics.inflight.dec()

    async def _generate(
        self,
        facts: AuditFacts,
        messages: list[dict[str, str]],
        attempt: int,
        deadline: float,
        started: float,
        result: _Attempt,
        streamer: FieldStreamer | None,
    ) -> AsyncIterator[str]:
        """Run one generation into ``result``; yield the prose deltas when ``streamer`` is given.

        The span is started by hand (not as the current span) because this generator yields:
        a current-span context must not stay attached while the consumer runs between chunks.
        """
        request = GenerationRequest(
            request_id=f"explain-{uuid.uuid4().hex}",
            messages=messages,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature if attempt == 1 else self.options.retry_temperature,
            seed=None if attempt == 1 else RETRY_SEED,
            json_schema=explanation_schema(),
        )
        span = self.tracer.start_span(
            "explain.generation",
            attributes={
                "explain.attempt": attempt,
                "llm.model": self.generator.model,
                "llm.backend": self.generator.backend,
                "llm.temperature": request.temperature,
            },
        )
        stream = self.generator.generate(request)
        try:
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    chunk = await asyncio.wait_for(anext(stream), timeout=remaining)
                except StopAsyncIteration:
                    break
                if chunk.text and result.first_token_s is None:
                    result.first_token_s = time.perf_counter() - started
                    self.metrics.ttft.observe(result.first_token_s)
                    span.set_attribute("llm.time_to_first_token_s", round(result.first_token_s, 4))
                result.raw += chunk.text
                result.prompt_tokens = chunk.prompt_tokens
                result.generated_tokens = chunk.generated_tokens
                if streamer is not None and chunk.text:
                    piece = streamer.feed(chunk.text)
                    if piece:
                        yield piece
        except TimeoutError:
            result.error = f"deadline of {self.options.timeout_s:g} s exceeded during attempt {attempt}"
            span.set_status(trace.Status(trace.StatusCode.ERROR, "deadline exceeded"))
        except Exception as exc:  # the engine failed: the template still answers, the span says why
            log.warning("generation failed for %s: %s", facts.audit_id, exc, exc_info=True)
            result.error = f"generation failed: {type(exc).__name__}"
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        finally:
            await stream.aclose()
            span.set_attribute("llm.prompt_tokens", result.prompt_tokens)
            span.set_attribute("llm.generated_tokens", result.generated_tokens)
            span.end()
            self.metrics.prompt_tokens.inc(result.prompt_tokens)
            self.metrics.generated_tokens.inc(result.generated_tokens)

    def _final(
        self, facts: AuditFacts, text: str, source: str, reason: str | None, prompt_tokens: int,
        generated_tokens: int, started: float, status: str,
    ) -> Explanation:
        self.metrics.requests.labels(source=source, status=status).inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        return Explanation(
            audit_id=facts.audit_id, text=text, source=source,  # type: ignore[arg-type]
            reason=reason, model=self.generator.model, backend=self.generator.backend,
            prompt_tokens=prompt_tokens, generated_tokens=generated_tokens,
        )
