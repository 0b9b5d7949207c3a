"""The request flows behind /v1/enroll, /v1/verify and /v1/hash (no HTTP types here).

Per modality it reads choose -> hash -> compare -> audit: the policy chooses the arm (pin, sticky
bucket, coverage: every choice is a pure method of :mod:`router.policy`), the gateway hashes the
image on it (retries, fallback), the template of the *served* model version is compared (codes of
different versions are not comparable), then fusion and the decision; the audit record is
committed before the caller gets the result. Shadow copies and template migration run
afterwards, bounded. Images stay the base64 text the caller sent (checked once, never decoded).

Everything is of the caller's tenant. A verification first reads the subject (every template and
its lock, one statement): a locked subject is refused before any engine work, and the decision
updates the throttle in the audit record's own transaction. Only a genuine match of a modality
(its own distance within the server's migration threshold, served by its arm without fallback,
in an accepted record) may be migrated to another arm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace

from router.audit_store import AuditStore
from router.auth import Principal
from router.config import RouterSettings
from router.errors import InvalidInput, NotEnrolled, RouterError, SubjectExists, SubjectNotFound, UpstreamUnavailable
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
from router.subjects import Actor, NewTemplate, SubjectStore
from router.upstream import HashGateway, HashOutcome
from router.verification import CODE_BITS, decide, fuse, hamming
from tracing import traced

T = TypeVar("T")
_HEX = frozenset("0123456789abcdefABCDEF")


def _is_code(code: object) -> bool:
    return isinstance(code, str) and len(code) == CODE_BITS // 4 and set(code) <= _HEX


@dataclass
class Caller:
    """What the flows need from the HTTP request: pins, headers (for a sticky header), trace id, and
    who calls (the key's tenant partitions everything the flows read and write)."""

    pins: Mapping[str, str]
    headers: Mapping[str, str]
    trace_id: str
    principal: Principal

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def actor(self) -> Actor:
        return Actor(self.principal.name, self.trace_id)


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


@dataclass
class VerificationService:
    settings: RouterSettings
    policy: PolicyHolder
    gateway: HashGateway
    subjects: SubjectStore
    audit: AuditStore
    metrics: RouterMetrics
    tracer: Any
    shadow: ShadowWork
    # backend -> model version it served last: lets the choice skip an arm whose version the
    # subject has no template for, instead of hashing there first and finding out.
    versions: dict[str, str] = field(default_factory=dict, init=False)

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
        images = {m: check_image(v, m, self.settings.max_image_bytes) for m, v in req.images().items()}
        if req.replace:
            caller.principal.require("enroll:replace", "replace an enrolled subject")
        else:
            # Refused before any engine work; the write below checks again in its transaction.
            existing = await self.subjects.load(caller.tenant, req.subject_id)
            if existing.templates:
                raise SubjectExists(f"subject {req.subject_id!r} is already enrolled; send \"replace\": true "
                                    "(needs the enroll:replace scope) to replace its templates")
        policy = self.policy.current
        per_modality = await first_error(
            *(self._enroll_modality(policy, m, img, req.subject_id, caller) for m, img in images.items())
        )
        stored = [s for ok, _, _ in per_modality for s in ok]
        failed = [f for _, bad, _ in per_modality for f in bad]
        with traced(self.tracer, "template.write", {"servestack.templates": len(stored)}):
            await self.subjects.enroll(caller.tenant, req.subject_id, [t for _, _, new in per_modality for t in new],
                                       replace=req.replace, actor=caller.actor())
        return EnrollResponse(subject_id=req.subject_id, templates=stored, failed=failed, trace_id=caller.trace_id)

    async def _enroll_modality(self, policy: TrafficPolicy, modality: str, image: str, subject_id: str, caller: Caller
                               ) -> tuple[list[TemplateStored], list[TemplateFailed], list[NewTemplate]]:
        arms = policy.enrollment_arms(self.choose(policy, modality, subject_id, caller),
                                      all_arms=self.settings.enroll_all_arms)
        outcomes = await asyncio.gather(*(self._hash(policy, a, [image]) for a in arms), return_exceptions=True)
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]  # the chosen arm must enrol; the others are best effort
        stored: list[TemplateStored] = []
        failed: list[TemplateFailed] = []
        new: dict[str, NewTemplate] = {}
        for arm, outcome in zip(arms, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                msg = outcome.message if isinstance(outcome, RouterError) else repr(outcome)
                failed.append(TemplateFailed(modality=modality, arm=arm.name, message=msg))
                continue
            engine = outcome.response.engine
            # Two arms of one version (engine or precision differs) store one template: the chosen arm's.
            new.setdefault(engine.version, NewTemplate(modality, engine.version, outcome.response.codes[0]))
            stored.append(TemplateStored(modality=modality, arm=arm.name, backend=outcome.backend,
                                         model_version=engine.version, precision=engine.precision))
        return stored, failed, list(new.values())

    # --- verify ----------------------------------------------------------------------------------
    async def verify(self, req: VerifyRequest, caller: Caller) -> AuditRecord:
        start = time.perf_counter()
        images = {m: check_image(v, m, self.settings.max_image_bytes) for m, v in req.images().items()}
        tenant = caller.tenant
        subject = await self.subjects.load(tenant, req.subject_id)
        now = time.time()
        if subject.retry_after_s(now) is not None:
            self.metrics.subject_locked.inc()
            raise await self.subjects.refuse_locked(tenant, req.subject_id, subject, now, caller.actor())
        if not subject.templates:
            raise SubjectNotFound(f"no subject {req.subject_id!r}")
        policy = self.policy.current
        threshold = req.threshold if req.threshold is not None else self.settings.default_threshold
        verified = await first_error(
            *(self._verify_modality(policy, m, img, req.subject_id, subject.templates.get(m, {}), threshold, caller)
              for m, img in images.items())
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
            await self.audit.record(record, tenant, weights, also=self.subjects.verdict_op(
                tenant, req.subject_id, record.decision, record.created_at))
        self.metrics.decisions.labels(record.decision).inc()
        for v in verified:
            self.shadow.after_verify(policy, tenant, req.subject_id, v.result, v.code, v.image, v.templates,
                                     threshold, genuine=self._genuine(record, v.result), audit_id=record.audit_id,
                                     versions=self.versions)
        return record

    def _genuine(self, record: AuditRecord, result: ModalityResult) -> bool:
        """May this modality's probe be enrolled on another arm? Only a match that would stand on its
        own: within the server's migration threshold (never the caller's), served by its arm without
        fallback, in an accepted record."""
        return (record.decision == "accept" and not result.fallbacks
                and result.distance <= self.settings.migration_threshold_bits)

    async def _verify_modality(self, policy: TrafficPolicy, modality: str, image: str, subject_id: str,
                               templates: dict[str, str], threshold: float, caller: Caller) -> _Verified:
        arm = self.choose(policy, modality, subject_id, caller)
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
