"""The router app: ``create_app(settings)`` builds every object and keeps it on ``app.state``.

Lifespan: one connection pool to the pods (:class:`router.pod_transport.PodTransport`) under one
shared ``httpx.AsyncClient`` (explicit timeouts), the audit
database (migrated, writer thread), policy subscribers (discovery, weight gauges), the policy
file watcher and the active health checker; all stopped in reverse order.

app.state: settings, telemetry, metrics, policy (``.current``), authenticator, balancer,
and after start-up: http, db, audit_store, subjects, flow, explanations, health, background.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from llm_serving.client import ExplainerClient
from router.admin import admin
from router.admission import Admission
from router.audit_store import AuditStore
from router.auth import Authenticator, KeyRing
from router.background import BackgroundWork
from router.balancer import Balancer, RetryBudget
from router.bodylimit import BodyLimitMiddleware
from router.config import RouterSettings
from router.db import Database
from router.deadline import DEADLINE_PATHS, DeadlineMiddleware
from router.discovery import Discovery
from router.endpoints import api
from router.errors import RouterError, error_response
from router.experiments.endpoints import build_router as experiments_router
from router.explain import ExplanationService
from router.fastpath import FastDispatch
from router.flow import VerificationService
from router.health import HealthChecker
from router.metrics import HttpMetricsMiddleware, RouterMetrics
from router.openapi_contract import document_contract
from router.ops import mount_docs, ops
from router.outcomes import outcomes
from router.pod_transport import PodTransport
from router.policy import EXPLAINER
from router.policy_sources.factory import make_source
from router.policy_sources.file import FilePolicySource
from router.policy_store import PolicyHolder
from router.ratelimit import RateLimiter
from router.ratelimit_store import SharedRateLimiter, shared_limiter
from router.shadow import ShadowWork
from router.subjects import SubjectStore, Throttle
from router.upstream import HashGateway
from tracing import Telemetry, TraceMiddleware, register_span_metrics, setup_telemetry
from trt_serving.client import HasherClient

log = logging.getLogger(__name__)

DESCRIPTION = """\
Canary/A-B router of ServeStack: biometric deep-hash verification.

* Verification: Hamming distance of 128-bit codes, fusion = mean over modalities, accept when the
  fused distance <= threshold. **Default threshold: 24** (of 128 bits; setting
  `SERVESTACK_ROUTER_DEFAULT_THRESHOLD`), per-request override within **5..50**.
* Auth: `Authorization: Bearer <key>` or `X-API-Key: <key>`; every key belongs to a tenant;
  scopes `client`, `pin` (the `X-ServeStack-Arm` header), `enroll:replace` and `admin`;
  per-key rate limits (429 + `Retry-After`).
* Errors: `{"error": {"code": "...", "message": "..."}}`.
* Every response carries the trace id in `x-trace-id`.
"""


async def _error_handler(request: Request, exc: Exception) -> Response:
    response = error_response(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
        # Starlette names the methods of the first route whose path matched; a path served by several
        # routes (GET and PUT /admin/v1/policy) allows all of theirs.
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def create_app(
    settings: RouterSettings,
    *,
    telemetry: Telemetry | None = None,
    slice_fns: Callable[..., Any] | None = None,
) -> FastAPI:
    """Build the router.

    Args:
        settings: validated settings.
        telemetry: tracer provider (tests pass one with an in-memory exporter); built otherwise.
        slice_fns: EndpointSlice list/watch functions per spec (tests: fakes of the Kubernetes API).
    """
    telemetry = telemetry or setup_telemetry("servestack-router", settings.service_version)
    metrics = RouterMetrics()
    register_span_metrics(metrics.registry, "servestack_router_spans_dropped_total", telemetry)
    source = make_source(settings)
    holder = PolicyHolder(source, on_reload_result=lambda r: metrics.policy_reloads.labels(r).inc())
    if isinstance(source, FilePolicySource):
        holder.load_snapshot(source.read_now())  # a bad file stops the router here, before it serves
    keys = KeyRing(settings.keys_file, on_reload_result=lambda r: metrics.keys_reloads.labels(r).inc()) \
        if settings.keys_file is not None and not settings.auth_disabled else None
    balancer = Balancer(
        consecutive_failures=settings.outlier_consecutive_failures,
        base_ejection_s=settings.outlier_base_ejection_s,
        max_ejection_s=settings.outlier_max_ejection_s,
        budget_factory=lambda: RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s,
                                           settings.retry_budget_window_s),
        on_eject=lambda backend: metrics.ejections.labels(backend).inc(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not holder.loaded:
            await holder.load()  # a remote source (the ConfigMap) is read once the loop runs
        # Every pod call goes through one pool: the explainer's through the shared client, the
        # hasher's (the hot path) through the same transport's byte-level request method.
        pods = PodTransport(max_connections_per_origin=settings.http_max_connections)
        http = httpx.AsyncClient(timeout=httpx.Timeout(settings.upstream_try_timeout_s,
                                                       connect=settings.connect_timeout_s), transport=pods)
        db = await asyncio.to_thread(Database, settings.audit_url, settings.audit_batch_max,
                                     lambda s: metrics.audit_commit.observe(s))
        hasher = HasherClient(pods)
        explainer = ExplainerClient(http)
        gateway = HashGateway(hasher, balancer, metrics, telemetry.tracer,
                              try_timeout_s=settings.upstream_try_timeout_s, max_retries=settings.max_retries,
                              backoff_base_s=settings.retry_backoff_base_s,
                              admission=Admission(settings.admission_limit_per_replica,
                                                  settings.admission_max_wait_ms / 1000,
                                                  lambda backend: len(balancer.available(backend)),
                                                  adaptive=settings.admission_adaptive,
                                                  min_per_replica=settings.admission_min_limit_per_replica,
                                                  max_per_replica=settings.admission_max_limit_per_replica,
                                                  on_refused=lambda b: metrics.admission_refused.labels(b).inc()))
        background = BackgroundWork(settings.shadow_max_inflight)
        subjects = SubjectStore(db, Throttle(settings.throttle_max_rejects, settings.throttle_window_s,
                                             settings.throttle_lockout_s))
        audit = AuditStore(db)
        shadow = ShadowWork(settings, gateway, subjects, metrics, telemetry.tracer, background)
        discovery = Discovery(balancer, settings.dns_refresh_s, slice_fns)
        holder.subscribe(discovery.apply)
        holder.subscribe(metrics.set_weights)
        holder.subscribe(lambda policy: metrics.policy_version.set(policy.version))

        async def probe_hasher(url: str) -> bool:
            return await hasher.ready(url, timeout_s=settings.health_timeout_s)

        async def probe_explainer(url: str) -> bool:
            return await explainer.ready(url, timeout_s=settings.health_timeout_s)

        health = HealthChecker(balancer, lambda b: probe_explainer if b == EXPLAINER else probe_hasher,
                               settings.health_interval_s, settings.health_timeout_s,
                               unhealthy_threshold=settings.health_unhealthy_threshold,
                               healthy_threshold=settings.health_healthy_threshold)
        st = app.state
        st.http, st.db, st.audit_store, st.subjects, st.background, st.health = (
            http, db, audit, subjects, background, health)
        st.flow = VerificationService(settings, holder, gateway, subjects, audit, metrics, telemetry.tracer, shadow)
        st.explanations = ExplanationService(explainer, balancer, audit, telemetry.tracer,
                                             settings.explainer_timeout_s,
                                             default_threshold=settings.default_threshold,
                                             canary_of=lambda route, arm: holder.current.is_canary(route, arm))
        tasks = [asyncio.create_task(holder.watch(settings.policy_poll_s), name="policy-watch"),
                 asyncio.create_task(health.run(), name="health-checks")]
        if keys is not None:
            tasks.append(asyncio.create_task(keys.watch(settings.keys_poll_s), name="keys-watch"))
        if isinstance(limiter, SharedRateLimiter):
            tasks.append(asyncio.create_task(limiter.run(), name="ratelimit-leases"))
        if settings.gc_freeze:
            # What is alive now (FastAPI, pydantic, SQLAlchemy, the OTel SDK: ~150k objects) lives
            # as long as the process; frozen, no later collection walks it again. Unfrozen, every
            # full collection under load walked all of it with the event loop stopped.
            gc.collect()
            gc.freeze()
        if settings.gc_gen0_threshold:
            # A request's objects die by reference counting; what a young collection walks is what
            # is alive in between (in-flight requests, queued spans), every 700 net allocations by
            # default: ~900 walks a second under load for nothing. At 10,000 they nearly vanish.
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(settings.gc_gen0_threshold, older, oldest)
        st.started = True
        try:
            yield
        finally:
            st.started = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await background.cancel_all()
            if isinstance(limiter, SharedRateLimiter):
                await limiter.close()  # leases go back to the shared buckets
            discovery.close()
            await http.aclose()  # closes ``pods`` too
            await asyncio.to_thread(db.close)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
            telemetry.shutdown()

    app = FastAPI(title="ServeStack router", version=settings.service_version, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.metrics = metrics
    app.state.policy = holder
    app.state.balancer = balancer
    limiter = shared_limiter(settings, metrics) if settings.ratelimit_store == "database" else RateLimiter()
    app.state.authenticator = Authenticator(keys, limiter,
                                            on_limited=lambda name: metrics.rate_limited.labels(name).inc())
    app.state.started = False
    for exc_type in (RouterError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, _error_handler)
    app.include_router(api)
    app.include_router(admin)
    app.include_router(ops)
    app.include_router(experiments_router())
    app.include_router(outcomes)
    document_contract(app, settings)
    mount_docs(app)
    # Added innermost first: Trace (outermost) -> HTTP metrics -> body limit -> deadline -> fast dispatch -> app.
    if settings.fast_path:
        app.add_middleware(FastDispatch, routes=list(app.routes))
    app.add_middleware(DeadlineMiddleware, paths=DEADLINE_PATHS, default_s=settings.request_deadline_s,
                       max_s=settings.max_request_deadline_s)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(TraceMiddleware, tracer=telemetry.tracer)
    return app
