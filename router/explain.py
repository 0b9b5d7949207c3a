"""Explanations of audit records: from the explainer pod, cached in the audit store.

The first explanation from the explainer is stored with the record; later requests (JSON or SSE)
are served from the cache. The explainer is reached only through
``llm_serving.client.ExplainerClient``.

Failure handling: when no explainer endpoint is reachable at all, the request fails with 503
``explainer_unavailable`` and Retry-After (nothing to say yet; a client retries later). When an
explainer was picked but fails (error, refusal, timeout, a stream cut short), the router answers
with the template explanation itself: ``source: "template"`` with the reason, not cached, so a
later request asks the model again. A stream cut short keeps the sentences already delivered
(each was checked) and the template completes the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind

from llm_serving.client import ExplainerClient, ExplainerError
from llm_serving.schemas import AuditFacts, Explanation, ModalityFacts
from llm_serving.sentences import plan
from router.audit_store import AuditStore
from router.balancer import Balancer
from router.errors import ExplainerUnavailable, NotFound
from router.policy import EXPLAINER
from router.schemas import AuditRecord
from tracing import inject_headers, traced

log = logging.getLogger(__name__)
MODALITIES = ("face", "fingerprint")
TEMPLATE_BACKEND = "router-template"

# (route, arm) -> True when the arm is a canary (not the route's first arm)
CanaryOf = Callable[[str, str], bool]


def facts_of(record: AuditRecord, *, default_threshold: float | None = None,
             canary_of: CanaryOf | None = None) -> AuditFacts:
    """Only what the explainer may state: the decision, its numbers and how it was made (no subject id).

    A record without modalities is a throttled subject (``subject_locked``): nothing was compared.
    """
    if not record.modalities:
        return AuditFacts(audit_id=record.audit_id, kind="subject_locked", decision=record.decision,
                          threshold=record.threshold)
    present = {m.modality for m in record.modalities}
    client = default_threshold is not None and abs(record.threshold - default_threshold) > 1e-9
    return AuditFacts(
        audit_id=record.audit_id, decision=record.decision, threshold=record.threshold,
        threshold_source="client" if client else "default", fused_distance=record.fused_distance,
        modalities=[ModalityFacts(modality=m.modality, distance=m.distance, arm=m.arm, model_version=m.model_version,
                                  precision=m.precision, backend=m.engine_backend, fallbacks=m.fallbacks[:8],
                                  canary=bool(canary_of and canary_of(m.route, m.arm)))
                    for m in record.modalities],
        missing_modalities=[name for name in MODALITIES if name not in present][:1],
    )


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def template_explanation(facts: AuditFacts, reason: str, delivered: list[str] | None = None) -> dict:
    """The template's explanation, after the checked sentences already ``delivered`` (if any)."""
    delivered = delivered or []
    pending = plan(facts)[len(delivered):]
    text = " ".join([*delivered, *(s.template for s in pending)])
    return Explanation(audit_id=facts.audit_id, text=text, source="template", reason=reason, model="none",
                       backend=TEMPLATE_BACKEND, model_sentences=len(delivered),
                       template_sentences=len(pending)).model_dump(mode="json")


@dataclass
class ExplanationService:
    client: ExplainerClient
    balancer: Balancer
    audit: AuditStore
    tracer: Any
    timeout_s: float
    default_threshold: float | None = field(default=None, kw_only=True)
    canary_of: CanaryOf | None = field(default=None, kw_only=True)

    async def _facts(self, audit_id: str, tenant: str) -> AuditFacts:
        record = await self.audit.get(audit_id, tenant)
        if record is None:
            raise NotFound(f"no audit record {audit_id!r}")
        return facts_of(record, default_threshold=self.default_threshold, canary_of=self.canary_of)

    def _endpoint(self) -> str:
        endpoint = self.balancer.pick(EXPLAINER)
        if endpoint is None:
            raise ExplainerUnavailable(f"no explainer is reachable: {self.balancer.describe(EXPLAINER)}")
        return endpoint.url

    async def cached(self, audit_id: str, tenant: str) -> dict | None:
        return await self.audit.get_explanation(audit_id, tenant)

    async def explain(self, audit_id: str, tenant: str) -> dict:
        """The explanation of one of ``tenant``'s records (another tenant's id: NotFound, as unknown)."""
        cached = await self.audit.get_explanation(audit_id, tenant)
        if cached is not None:
            return cached
        facts = await self._facts(audit_id, tenant)
        url = self._endpoint()
        with traced(self.tracer, "upstream.explain", {"server.address": url}, kind=SpanKind.CLIENT):
            try:
                explanation = await self.client.explain(url, facts, timeout_s=self.timeout_s,
                                                        headers=dict(inject_headers({})))
            except ExplainerError as exc:
                log.warning("explainer at %s failed for %s: %s", url, audit_id, exc)
                return template_explanation(facts, f"explainer failed: {exc}")
        data = explanation.model_dump(mode="json")
        await self.audit.save_explanation(audit_id, data, tenant)
        return data

    async def open_stream(self, audit_id: str, tenant: str) -> AsyncIterator[bytes]:
        """Validate (404/503 before any byte is sent), then return the SSE byte stream."""
        cached = await self.audit.get_explanation(audit_id, tenant)
        if cached is not None:
            return _single(sse("final", cached))
        facts = await self._facts(audit_id, tenant)
        url = self._endpoint()
        return self._relay(audit_id, tenant, facts, url)

    async def _relay(self, audit_id: str, tenant: str, facts: AuditFacts, url: str) -> AsyncIterator[bytes]:
        delivered: list[str] = []  # the checked sentences relayed so far
        with traced(self.tracer, "upstream.explain", {"server.address": url, "servestack.stream": True},
                    kind=SpanKind.CLIENT):
            try:
                async for event, data in self.client.stream(url, facts, timeout_s=self.timeout_s,
                                                            headers=dict(inject_headers({}))):
                    if event == "final":
                        final = Explanation.model_validate(data).model_dump(mode="json")
                        await self.audit.save_explanation(audit_id, final, tenant)
                        yield sse("final", final)
                        return
                    if event == "delta":
                        delivered.append(str(data.get("text", "")).strip())
                        yield sse("delta", data)
                    elif event == "error":
                        raise ExplainerError(f"explainer stream error: {data}")
                raise ExplainerError("the explainer stream ended without a final event")
            except ExplainerError as exc:
                log.warning("explainer stream from %s failed for %s: %s", url, audit_id, exc)
                final = template_explanation(facts, f"explainer failed: {exc}", delivered)
                for i, sentence in enumerate(plan(facts)[len(delivered):]):
                    first = i == 0 and not delivered
                    yield sse("delta", {"text": sentence.template if first else " " + sentence.template})
                yield sse("final", final)


async def _single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk
