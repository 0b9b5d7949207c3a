"""Work after a verification: shadow comparison and template migration (both off the response path).

Shadow: a sampled share of a route's requests is also hashed on the shadow arm; the shadow's
decision is compared with the primary's (``shadow_comparisons_total``) and, when both arms run the
same model version (only the engine/precision differs), its code bit by bit
(``shadow_bits_total``). Never returned; one try with ``shadow_timeout_s``; skipped, not queued,
beyond ``shadow_max_inflight``.

Migration ("template migration", docs/ARCHITECTURE.md): after a genuine match of a modality (the
flow decides: its own distance within the server's migration threshold, served without fallback,
an accepted record), the probe image is hashed on the route's other arms whose model version the subject has no
template for, and that code is enrolled with the audit id that vouched for it, so canary coverage
grows without storing images. A fused accept alone is no genuine match: at a loose client
threshold it carries a far-off face along with a matching fingerprint. Shadow calls write nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.background import BackgroundWork
from router.config import RouterSettings
from router.metrics import RouterMetrics
from router.policy import Arm, TrafficPolicy
from router.schemas import ModalityResult
from router.subjects import SubjectStore
from router.upstream import HashGateway, ShadowFailed
from router.verification import CODE_BITS, decide, hamming
from tracing import traced

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Subject:
    tenant: str
    subject_id: str
    audit_id: str  # the verification whose probe this is


@dataclass
class ShadowWork:
    settings: RouterSettings
    gateway: HashGateway
    subjects: SubjectStore
    metrics: RouterMetrics
    tracer: Any
    work: BackgroundWork

    def after_verify(self, policy: TrafficPolicy, tenant: str, subject_id: str, result: ModalityResult, code: str,
                     image: str, templates: Mapping[str, str], threshold: float, *, genuine: bool, audit_id: str,
                     versions: Mapping[str, str]) -> None:
        """Start the shadow call and migrations this verification calls for (returns at once).

        ``genuine``: this modality's match may vouch for a migrated template (the flow's judgement).
        """
        route = result.route
        primary = policy.arm(route, result.arm, "pinned")
        shadow = policy.shadow_for(route, primary)
        migrate = policy.migration_arms(route, result.arm, templates, versions) \
            if genuine and self.settings.template_migration else []
        subject = _Subject(tenant, subject_id, audit_id)
        if shadow is not None:
            also_migrate = any(m.name == shadow.name for m in migrate)
            migrate = [m for m in migrate if m.name != shadow.name]
            if not self.work.spawn(self._call(subject, shadow, result, code, image, templates, threshold,
                                              compare=True, migrate=also_migrate), name=f"shadow-{route}"):
                self.metrics.shadow_skipped.labels(route, "saturated").inc()
        for arm in migrate:
            if not self.work.spawn(self._call(subject, arm, result, code, image, templates, threshold,
                                              compare=False, migrate=True), name=f"migrate-{route}"):
                self.metrics.migrations.labels(route, arm.name, "skipped").inc()

    async def _call(self, subject: _Subject, arm: Arm, primary: ModalityResult, code: str, image: str,
                    templates: Mapping[str, str], threshold: float, *, compare: bool, migrate: bool) -> None:
        route = primary.route
        attrs = {"servestack.route": route, "servestack.arm": arm.name, "servestack.backend": arm.backend,
                 "servestack.compare": compare, "servestack.migrate": migrate}
        with traced(self.tracer, "shadow" if compare else "template.migrate", attrs) as span:
            try:
                resp = await self.gateway.shadow(arm, [image], self.settings.shadow_timeout_s)
                other = resp.codes[0]
                hamming(other, other)  # validates the code
            except (ShadowFailed, IndexError, ValueError) as exc:
                span.set_attribute("servestack.outcome", "failed")
                if compare:
                    self.metrics.shadow_skipped.labels(route, "failed").inc()
                if migrate:
                    self.metrics.migrations.labels(route, arm.name, "failed").inc()
                log.info("%s call to %s failed: %s", "shadow" if compare else "migration", arm.backend, exc)
                return
            version = resp.engine.version
            template = templates.get(version)
            if compare:
                self._compare(route, primary, arm.name, code, other, version, template, threshold)
            if migrate and template is None:
                vouching = (primary.model_version, templates[primary.model_version])
                stored = await self.subjects.migrate(subject.tenant, subject.subject_id, route, version, other,
                                                     vouched_by=vouching, audit_id=subject.audit_id)
                # Not stored: a template of that version arrived meanwhile, or the subject was erased
                # or re-enrolled since the verification.
                self.metrics.migrations.labels(route, arm.name, "ok" if stored else "skipped").inc()

    def _compare(self, route: str, primary: ModalityResult, shadow_arm: str, code: str, other: str, version: str,
                 template: str | None, threshold: float) -> None:
        m = self.metrics
        if version == primary.model_version:
            # Same model version, other engine/precision: codes are comparable bit by bit.
            differ = hamming(code, other)
            m.shadow_bits.labels(route, primary.arm, shadow_arm, "agree").inc(CODE_BITS - differ)
            m.shadow_bits.labels(route, primary.arm, shadow_arm, "differ").inc(differ)
        if template is None:
            m.shadow_skipped.labels(route, "no_template").inc()
            return
        shadow_decision = decide(hamming(other, template), threshold)
        agreement = "true" if shadow_decision == primary.decision else "false"
        m.shadow_comparisons.labels(route, primary.arm, shadow_arm, agreement).inc()
