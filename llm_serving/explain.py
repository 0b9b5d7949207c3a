"""Turn an audit record into a checked explanation: the core of the pod, free of HTTP.

Flow per record: plan the sentences (``llm_serving.sentences``) -> generate them with guided
decoding (a regex that forces each sentence's slots and allows no other digit) -> check each
sentence as soon as it is complete and release it only when it passes -> on a failing sentence
(or an output that ends early) one retry that continues after the sentences already released,
at a higher temperature -> the template's sentences complete whatever is still missing, and the
explanation is then marked ``source: "template"`` with the reason. The whole thing runs under one
deadline; a model that is slow, wrong or broken never leaves a caller without a checked answer.

``events`` yields ``("delta", {"text"})`` per checked sentence and ends with exactly one
``("final", Explanation)`` whose text is the concatenation of every delta. Closing the stream
early (client gone) closes the generation, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from opentelemetry import trace

from llm_serving.errors import ImpossibleRecord, NotReady
from llm_serving.facts import check_consistent
from llm_serving.generator import GenerationRequest, Generator
from llm_serving.metrics import ExplainerMetrics
from llm_serving.prompts import build_messages
from llm_serving.schemas import AuditFacts, Explanation
from llm_serving.sentences import Sentence, check_complete, check_sentence, guide_regex, plan, split_sentences
from tracing import traced

log = logging.getLogger(__name__)

RETRY_SEED = 1234  # a fixed seed keeps the retry reproducible for a given record
ATTEMPTS = 2  # the first generation and one retry


@dataclass(frozen=True)
class ExplainOptions:
    max_tokens: int
    temperature: float
    retry_temperature: float
    timeout_s: float


@dataclass
class _Progress:
    """The explanation as far as it has been checked."""

    sentences: list[Sentence]
    started: float
    released: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_sentence_s: float | None = None
    error: str | None = None

    @property
    def pending(self) -> list[Sentence]:
        return self.sentences[len(self.released):]

    def delta(self, text: str) -> dict[str, object]:
        """The delta event of the sentence just released: joined to the previous one by a space."""
        return {"text": text if len(self.released) == 1 else " " + text}


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
            raise ImpossibleRecord(f"impossible record: {problem}")
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
            progress = _Progress(plan(facts), started)
        self.metrics.inflight.inc()
        try:
            for attempt in range(1, ATTEMPTS + 1):
                async for sentence in self._attempt(facts, messages, attempt, deadline, started, progress):
                    yield "delta", progress.delta(sentence)
                if not progress.pending or progress.error is not None:
                    break
            source, from_model = "model", len(progress.released)
            if progress.pending:  # the template completes what the model did not deliver
                source = "template"
                for sentence in progress.pending:
                    progress.released.append(sentence.template)
                    yield "delta", progress.delta(sentence.template)
            text = " ".join(progress.released)
            problem = check_complete(text, facts)
            if problem is not None:  # every released sentence passed its check: a bug in the plan
                log.error("explanation %s fails the completeness check: %s", facts.audit_id, problem)
            reasons = progress.failures + ([progress.error] if progress.error else [])
            status = "ok" if source == "model" else (
                "timeout" if progress.error and progress.error.startswith("deadline") else
                "error" if progress.error else "grounding_failed")
            if source == "template":
                log.info("explanation %s completed by the template: %s", facts.audit_id, "; ".join(reasons))
            reason = "; ".join(reasons) if source == "template" else None
            yield "final", self._final(facts, text, source, reason, progress, from_model, started,
                                       status).model_dump()
        finally:
            self.metrics.inflight.dec()

    async def _attempt(
        self, facts: AuditFacts, messages: list[dict[str, str]], attempt: int, deadline: float, started: float,
        progress: _Progress,
    ) -> AsyncIterator[str]:
        """Generate the pending sentences; yield each one that passes its check, stop at the first that fails."""
        pending = progress.pending
        prefix = " ".join(progress.released) + " " if progress.released else ""
        buffer = ""
        generation = self._generate(facts, messages, pending, prefix, attempt, deadline, progress)
        async with aclosing(generation):  # leaving early (a failed sentence) aborts the generation now
            async for chunk, final in generation:
                buffer += chunk
                complete, buffer = split_sentences(buffer, final=final)
                for text in complete:
                    sentence = progress.pending[0] if progress.pending else None
                    if sentence is None:
                        return  # the model wrote more than planned: the plan is complete, the rest is dropped
                    with traced(self.tracer, "explain.grounding_check",
                                {"explain.attempt": attempt, "explain.topic": sentence.topic}) as span:
                        reason = check_sentence(sentence, text, facts)
                        span.set_attribute("explain.grounded", reason is None)
                    if reason is not None:
                        log.info("explanation %s: %s: %r", facts.audit_id, reason, text)
                        self.metrics.grounding_failures.inc()
                        progress.failures.append(f"attempt {attempt}: {reason}")
                        return  # closing the generation aborts it: nothing unchecked is shown
                    progress.released.append(text)
                    if progress.first_sentence_s is None:
                        progress.first_sentence_s = time.perf_counter() - started
                        self.metrics.ttft.observe(progress.first_sentence_s)
                    yield text
        if progress.pending and progress.error is None:
            progress.failures.append(f"attempt {attempt}: output ended before the {progress.pending[0].topic} sentence")

    async def _generate(
        self, facts: AuditFacts, messages: list[dict[str, str]], pending: list[Sentence], prefix: str,
        attempt: int, deadline: float, progress: _Progress,
    ) -> AsyncIterator[tuple[str, bool]]:
        """Stream ``(text, is_last)`` of one generation; errors and the deadline end up in ``progress.error``.

        The span is started by hand (not as the current span) because this generator yields:
        a current-span context must not stay attached while the consumer runs between chunks.
        """
        request = GenerationRequest(
            request_id=f"explain-{uuid.uuid4().hex}",
            messages=messages,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature if attempt == 1 else self.options.retry_temperature,
            seed=None if attempt == 1 else RETRY_SEED,
            regex=guide_regex(pending),
            assistant_prefix=prefix,
        )
        span = self.tracer.start_span(
            "explain.generation",
            attributes={
                "explain.attempt": attempt,
                "explain.sentences": len(pending),
                "llm.model": self.generator.model,
                "llm.backend": self.generator.backend,
                "llm.temperature": request.temperature,
            },
        )
        stream = self.generator.generate(request)
        prompt_tokens = generated_tokens = 0
        first_token = True
        try:
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    chunk = await asyncio.wait_for(anext(stream), timeout=remaining)
                except StopAsyncIteration:
                    yield "", True
                    break
                prompt_tokens, generated_tokens = chunk.prompt_tokens, chunk.generated_tokens
                if chunk.text and first_token:
                    first_token = False
                    ttft = time.perf_counter() - progress.started
                    self.metrics.ttft.observe(ttft)
                    span.set_attribute("llm.time_to_first_token_s", round(ttft, 4))
                yield chunk.text, False
        except TimeoutError:
            progress.error = f"deadline of {self.options.timeout_s:g} s exceeded during attempt {attempt}"
            span.set_status(trace.Status(trace.StatusCode.ERROR, "deadline exceeded"))
        except Exception as exc:  # the engine failed: the template still answers, the span says why
            log.warning("generation failed for %s: %s", facts.audit_id, exc, exc_info=True)
            progress.error = f"generation failed: {type(exc).__name__}"
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        finally:
            await stream.aclose()
            progress.prompt_tokens += prompt_tokens
            progress.generated_tokens += generated_tokens
            span.set_attribute("llm.prompt_tokens", prompt_tokens)
            span.set_attribute("llm.generated_tokens", generated_tokens)
            span.end()
            self.metrics.prompt_tokens.inc(prompt_tokens)
            self.metrics.generated_tokens.inc(generated_tokens)

    def _final(
        self, facts: AuditFacts, text: str, source: str, reason: str | None, progress: _Progress, from_model: int,
        started: float, status: str,
    ) -> Explanation:
        self.metrics.requests.labels(source=source, status=status).inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        return Explanation(
            audit_id=facts.audit_id, text=text, source=source,  # type: ignore[arg-type]
            reason=reason, model=self.generator.model, backend=self.generator.backend,
            prompt_tokens=progress.prompt_tokens, generated_tokens=progress.generated_tokens,
            model_sentences=from_model, template_sentences=len(progress.released) - from_model,
            check_failures=progress.failures, first_sentence_s=progress.first_sentence_s,
        )
