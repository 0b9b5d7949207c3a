"""The request flows behind /v1/enroll, /v1/verify and /v1/hash (no HTTP types here).

Per modality it reads choose -> hash -> compare -> audit: the policy chooses the arm (pin, sticky
bucket, coverage: every choice is a pure method of :mod:`router.policy`), the gateway hashes the
image on it (retries, fallback), the template of the *served* model version is compared (codes of
different versions are not comparable), then fusion and the decision; the audit record is
committed before the caller gets the result. Shadow copies and template migration run
afterwards, bounded. Images stay the base64 text the caller sent (checked once, never decoded).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry import trace

from router.audit_store import AuditStore
from router.config import RouterSettings
from router.errors import InvalidInput, NotEnrolled, RouterError, UpstreamUnavailable
from router.ids import new_id
from router.metrics import RouterMetrics
from router.policy import Arm, RequestContext, TrafficPolicy
from router.policy_store import PolicyHolder
from router.schemas import (
    AuditRecord,
    EnrollRequest,
    EnrollResponse,
    HashApiRequest,
    HashApiResponse,
    ModalityResult,
    TemplateFailed,
    TemplateStored,
    VerifyRequest,
    check_image,
)
from router.shadow import ShadowWork
from router.templates import TemplateStore
from router.upstream import HashGateway, HashOutcome
from router.verification import CODE_BITS, decide, fuse, hamming
from tracing import traced

T = TypeVar("T")
_HEX = frozenset("0123456789abcdefABCDEF")


def _is_code(code: object) -> bool:
    return isinstance(code, str) and len(code) == CODE_BITS // 4 and set(code) <= _HEX


@dataclass
class Caller:
    """What the flows need from the HTTP request: pins, headers (for a sticky header), trace id."""

    pins: Mapping[str, str]
    headers: Mapping[str, str]
    trace_id: str


@dataclass
class _Verified:
    result: ModalityResult
    code: str
    image: str
    templates: dict[str, str]


async def first_error(*aws: Awaitable[T]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(aw) for aw in aws]  # type: ignore[arg-type]
    except BaseExceptionGroup as group:
        routers = [e for e in group.exceptions if isinstance(e, RouterError)]
        raise (routers or list(group.exceptions))[0] from None
    return [t.result() for t in tasks]


class VerificationService:
    def __init__(self, settings: RouterSettings, policy: PolicyHolder, gateway: HashGateway,
                 templates: TemplateStore, audit: AuditStore, metrics: RouterMetrics, tracer,
                 shadow: ShadowWork) -> None:
        self.settings = settings
        self.policy = policy
        self.gateway = gateway
        self.templates = templates
        self.audit = audit
        self.metrics = metrics
        self.tracer = tracer
        self.shadow = shadow
        # backend -> model version it served last: lets the choice skip an arm whose version the
        # subject has no template for, instead of hashing there first and finding out.
        self.versions: dict[str, str] = {}

    # --- choose ----------------------------------------------------------------------------------
    def choose(self, policy: TrafficPolicy, route: str, subject_id: str | None, caller: Caller) -> Arm:
        """The policy's arm for this request; recorded as an event on the request's span."""
        arm = policy.choose(RequestContext(route=route, sticky_value=policy.sticky_value(route, caller.headers,
                                                                                         subject_id),
                                           pins=caller.pins))
        span = trace.get_current_span()
        if span.is_recording():
            # OpenTelemetry's feature-flag evaluation event: the experiment is the flag, the arm its variant.
            span.add_event("feature_flag.evaluation", {
                "feature_flag.key": policy.experiment(route), "feature_flag.result.variant": arm.name,
                "feature_flag.provider_name": "servestack.policy", "servestack.route": route,
                "servestack.arm": arm.name, "servestack.backend": arm.backend,
                "servestack.arm_reason": arm.reason, "servestack.policy_version": policy.version})
        return arm

    async def _hash(self, policy: TrafficPolicy, arm: Arm, images: list[str]) -> HashOutcome:
        outcome = await self.gateway.hash(policy, arm, images)
        codes = outcome.response.codes
        if len(codes) != len(images) or not all(_is_code(c) for c in codes):
            raise UpstreamUnavailable(f"{outcome.backend} answered {len(codes)} malformed or missing code(s) "
                                      f"for {len(images)} image(s)")
        self.versions[outcome.backend] = outcome.response.engine.version
        return outcome

    # --- enroll ----------------------------------------------------------------------------------
    async def enroll(self, req: EnrollRequest, caller: Caller) -> EnrollResponse:
        policy = self.policy.current
        images = {m: check_image(v, m, self.settings.max_image_bytes) for m, v in req.images().items()}
        per_modality = await first_error(
            *(self._enroll_modality(policy, m, img, req.subject_id, caller) for m, img in images.items())
        )
        stored = [s for ok, _ in per_modality for s in ok]
        failed = [f for _, bad in per_modality for f in bad]
        return EnrollResponse(subject_id=req.subject_id, templates=stored, failed=failed, trace_id=caller.trace_id)

    async def _enroll_modality(self, policy: TrafficPolicy, modality: str, image: str, subject_id: str,
                               caller: Caller) -> tuple[list[TemplateStored], list[TemplateFailed]]:
        arms = policy.enrollment_arms(self.choose(policy, modality, subject_id, caller),
                                      all_arms=self.settings.enroll_all_arms)
        outcomes = await asyncio.gather(*(self._hash(policy, a, [image]) for a in arms), return_exceptions=True)
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]  # the chosen arm must enrol; the others are best effort
        stored: list[TemplateStored] = []
        failed: list[TemplateFailed] = []
        for arm, outcome in zip(arms, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                msg = outcome.message if isinstance(outcome, RouterError) else repr(outcome)
                failed.append(TemplateFailed(modality=modality, arm=arm.name, message=msg))
                continue
            engine = outcome.response.engine
            with traced(self.tracer, "template.write", {"servestack.route": modality, "servestack.arm": arm.name}):
                await self.templates.put(subject_id, modality, engine.version, outcome.response.codes[0], "enroll")
            stored.append(TemplateStored(modality=modality, arm=arm.name, backend=outcome.backend,
                                         model_version=engine.version, precision=engine.precision))
        return stored, failed

    # --- verify ----------------------------------------------------------------------------------
    async def verify(self, req: VerifyRequest, caller: Caller) -> AuditRecord:
        start = time.perf_counter()
        policy = self.policy.current
        threshold = req.threshold if req.threshold is not None else self.settings.default_threshold
        images = {m: check_image(v, m, self.settings.max_image_bytes) for m, v in req.images().items()}
        verified = await first_error(
            *(self._verify_modality(policy, m, img, req.subject_id, threshold, caller) for m, img in images.items())
        )
        fused = fuse([v.result.distance for v in verified])
        record = AuditRecord(
            audit_id=new_id(), created_at=time.time(), trace_id=caller.trace_id,
            subject_id=req.subject_id, decision=decide(fused, threshold), threshold=threshold,
            fused_distance=fused, latency_ms=(time.perf_counter() - start) * 1000,
            modalities=[v.result for v in verified], policy_version=policy.version,
        )
        weights = (None if self.audit.knows_policy(policy.version)
                   else {r: policy.weights(r) for r in policy.spec.routes})
        with traced(self.tracer, "audit.write", {"servestack.audit_id": record.audit_id,
                                                  "servestack.decision": record.decision}):
            await self.audit.record(record, weights)
        self.metrics.decisions.labels(record.decision).inc()
        for v in verified:
            self.shadow.after_verify(policy, req.subject_id, v.result, v.code, v.image, v.templates, threshold,
                                     accepted=record.decision == "accept", versions=self.versions)
        return record

    async def _verify_modality(self, policy: TrafficPolicy, modality: str, image: str, subject_id: str,
                               threshold: float, caller: Caller) -> _Verified:
        arm = self.choose(policy, modality, subject_id, caller)
        templates = await self.templates.get(subject_id, modality)
        if not templates:
            raise NotEnrolled(f"subject {subject_id!r} has no {modality} template: enrol first")
        arm = policy.coverage_arm(arm, templates, self.versions)
        outcome = await self._hash(policy, arm, [image])
        version = outcome.response.engine.version
        if version not in templates:
            # First sight of this backend's version, or a fallback to a version without a template:
            # try the other arms once before giving up.
            for alt in policy.retry_arms(arm, outcome.backend, templates, self.versions):
                alt_outcome = await self._hash(policy, alt, [image])
                if alt_outcome.response.engine.version in templates:
                    arm, outcome, version = alt, alt_outcome, alt_outcome.response.engine.version
                    break
        if version not in templates:
            raise NotEnrolled(f"subject {subject_id!r} has no {modality} template for model version {version!r} "
                              f"(enrolled versions: {sorted(templates)})")
        code = outcome.response.codes[0]
        distance = hamming(code, templates[version])
        engine = outcome.response.engine
        result = ModalityResult(
            modality=modality, route=modality, arm=arm.name, arm_reason=arm.reason, backend=outcome.backend,
            model_version=version, precision=engine.precision, engine_backend=engine.backend, distance=distance,
            decision=decide(distance, threshold), latency_ms=outcome.latency_ms, attempts=outcome.attempts,
            fallbacks=outcome.fallbacks,
        )
        return _Verified(result=result, code=code, image=image, templates=templates)

    # --- hash ------------------------------------------------------------------------------------
    async def hash(self, req: HashApiRequest, caller: Caller) -> HashApiResponse:
        if len(req.images) > self.settings.max_images_per_hash:
            raise InvalidInput(f"at most {self.settings.max_images_per_hash} images per request")
        policy = self.policy.current
        images = [check_image(v, f"images[{i}]", self.settings.max_image_bytes) for i, v in enumerate(req.images)]
        arm = self.choose(policy, req.modality, req.subject_id, caller)
        outcome = await self._hash(policy, arm, images)
        engine = outcome.response.engine
        return HashApiResponse(modality=req.modality, arm=arm.name, backend=outcome.backend,
                               model_version=engine.version, precision=engine.precision,
                               engine_backend=engine.backend, codes=outcome.response.codes,
                               fallbacks=outcome.fallbacks, trace_id=caller.trace_id)
