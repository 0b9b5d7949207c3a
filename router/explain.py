"""Explanations of audit records: from the explainer pod, cached in the audit store.

The first generation is stored with the record; later requests (JSON or SSE) are served from the
cache. The explainer is reached only through ``llm_serving.client.ExplainerClient``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from opentelemetry.trace import SpanKind

from llm_serving.client import ExplainerClient, ExplainerError
from llm_serving.schemas import AuditFacts, Explanation, ModalityFacts
from router.audit_store import AuditStore
from router.balancer import Balancer
from router.errors import NotFound, UpstreamUnavailable
from router.policy import EXPLAINER
from router.schemas import AuditRecord
from tracing import inject_headers, traced


def facts_of(record: AuditRecord) -> AuditFacts:
    """Only what the explainer may state: the decision and its numbers (no subject id)."""
    return AuditFacts(
        audit_id=record.audit_id, decision=record.decision, threshold=record.threshold,
        fused_distance=record.fused_distance,
        modalities=[ModalityFacts(modality=m.modality, distance=m.distance, arm=m.arm, model_version=m.model_version,
                                  precision=m.precision, backend=m.engine_backend) for m in record.modalities],
    )


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ExplanationService:
    def __init__(self, client: ExplainerClient, balancer: Balancer, audit: AuditStore, tracer,
                 timeout_s: float) -> None:
        self.client = client
        self.balancer = balancer
        self.audit = audit
        self.tracer = tracer
        self.timeout_s = timeout_s

    async def _facts(self, audit_id: str, tenant: str) -> AuditFacts:
        record = await self.audit.get(audit_id, tenant)
        if record is None:
            raise NotFound(f"no audit record {audit_id!r}")
        return facts_of(record)

    def _endpoint(self) -> str:
        endpoint = self.balancer.pick(EXPLAINER)
        if endpoint is None:
            raise UpstreamUnavailable(f"explainer: {self.balancer.describe(EXPLAINER)}")
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
                raise UpstreamUnavailable(f"explainer at {url}: {exc}") from exc
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
        with traced(self.tracer, "upstream.explain", {"server.address": url, "servestack.stream": True},
                    kind=SpanKind.CLIENT):
            try:
                async for event, data in self.client.stream(url, facts, timeout_s=self.timeout_s,
                                                            headers=dict(inject_headers({}))):
                    if event == "final":
                        final = Explanation.model_validate(data).model_dump(mode="json")
                        await self.audit.save_explanation(audit_id, final, tenant)
                        yield sse("final", final)
                    else:
                        yield sse(event, data)
            except ExplainerError as exc:
                yield sse("error", {"error": {"code": "upstream_unavailable", "message": f"explainer: {exc}"}})


async def _single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk
