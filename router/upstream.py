"""Resilient calls to hasher pods: per-try timeout, retries on other replicas, fallback chain.

For one arm: try the arm's backend (up to ``1 + max_retries`` tries with jittered exponential
backoff, retries drawn from the backend's retry budget); when the backend cannot serve, walk its
fallback chain; when nothing can, raise a 503 that names every backend tried and why. Pods are
reached only through ``trt_serving.client.HasherClient``.

Where a retry goes: a replica not yet tried if one is available; otherwise, after a fast failure
(connect error, reset, 5xx), back to an available replica already tried, so that a one-replica
backend survives a transient blip without falling back (Envoy's ``previous_hosts`` retry
predicate likewise prefers, but does not insist on, another host). Never after a timeout (that
would spend a second whole try timeout on a replica that hangs), and never to an ejected replica.

Fallbacks and the retry budget: a fallback that follows failed tries is a retry of the request on
another backend, so it draws on the budget of the backend it lands on, like that backend's own
retries; a dead backend then cannot pile its failures onto its fallback beyond the budget. A
fallback with no failed try behind it (every replica of the preferred backend ejected or
unhealthy) amplifies nothing: it is the request's first upstream call, so it draws nothing, and a
canary whose replicas are all down is served by stable rather than refused.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from opentelemetry.trace import SpanKind

from router.balancer import Balancer, Endpoint
from router.errors import UpstreamRejected, UpstreamUnavailable
from router.metrics import RouterMetrics
from router.policy import Arm, TrafficPolicy
from tracing import inject_headers, traced
from tracing.spans import mark_error
from trt_serving.client import HasherClient, HasherRejected, HasherUnavailable
from trt_serving.schemas import HashResponse


@dataclass
class HashOutcome:
    response: HashResponse
    backend: str
    attempts: int
    latency_ms: float
    fallbacks: list[str] = field(default_factory=list)


class ShadowFailed(Exception):
    """A shadow or migration call failed (only counted, never surfaced)."""


class _BackendExhausted(Exception):
    """This backend could not serve (reason in the message); the caller moves down the chain."""

    def __init__(self, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.tries = tries  # upstream calls made (and failed) on this backend


def fallback_chain(policy: TrafficPolicy, backend: str) -> list[str]:
    """``backend`` then its fallbacks depth-first (each backend at most once: cycles are allowed)."""
    chain: list[str] = []

    def visit(name: str) -> None:
        if name in chain or name not in policy.spec.backends:
            return
        chain.append(name)
        for nxt in policy.spec.backends[name].fallback:
            visit(nxt)

    visit(backend)
    return chain


class HashGateway:
    def __init__(
        self,
        client: HasherClient,
        balancer: Balancer,
        metrics: RouterMetrics,
        tracer,
        *,
        try_timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.balancer = balancer
        self.metrics = metrics
        self.tracer = tracer
        self.try_timeout_s = try_timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self._rng = rng or random.Random()

    async def hash(self, policy: TrafficPolicy, arm: Arm, images: Sequence[str]) -> HashOutcome:
        """Hash ``images`` on ``arm`` (retries, then the fallback chain); 503 naming what was tried."""
        start = time.perf_counter()
        tried: list[str] = []
        failed_tries = 0
        for backend in fallback_chain(policy, arm.backend):
            try:
                response, attempts = await self._on_backend(arm, backend, images, after_failed_tries=failed_tries > 0)
            except _BackendExhausted as exc:
                tried.append(f"{backend} ({exc})")
                failed_tries += exc.tries
                continue
            if backend != arm.backend:
                self.metrics.fallbacks.labels(arm.route, arm.backend, backend).inc()
            return HashOutcome(response, backend, attempts, (time.perf_counter() - start) * 1000,
                               fallbacks=[t.split(" ", 1)[0] for t in tried])
        raise UpstreamUnavailable(
            f"route {arm.route!r} arm {arm.name!r}: no backend could serve; tried " + "; ".join(tried)
        )

    async def shadow(self, arm: Arm, images: Sequence[str], timeout_s: float) -> HashResponse:
        """One try on the arm's own backend: no retry, no fallback (shadow calls and migrations).

        Raises :class:`ShadowFailed` for any failure: nothing of it may reach a client.
        """
        endpoint = self.balancer.pick(arm.backend)
        if endpoint is None:
            raise ShadowFailed(f"{arm.backend}: no available replica")
        try:
            return await self._try(arm, arm.backend, endpoint, images, timeout_s, attempt=1, shadow=True)
        except (_TryFailed, UpstreamRejected) as exc:
            raise ShadowFailed(str(exc)) from exc

    async def _on_backend(self, arm: Arm, backend: str, images: Sequence[str], *,
                          after_failed_tries: bool) -> tuple[HashResponse, int]:
        budget = self.balancer.budget(backend)
        if not after_failed_tries:
            budget.on_request()  # a fallback after failures is a retry: it earns no budget, it spends it
        tried: set[str] = set()
        last: _TryFailed | None = None
        for attempt in range(1, self.max_retries + 2):
            endpoint = self._pick(backend, tried, last)  # recorded on the try's span (server.address)
            if endpoint is None:
                if last is None:
                    raise _BackendExhausted(f"no available replica: {self.balancer.describe(backend)}", 0)
                raise _BackendExhausted(f"no replica to retry on after {attempt - 1} tries; last error: {last}",
                                        attempt - 1)
            if attempt > 1 or after_failed_tries:
                # Only a retry that has somewhere to go draws on the budget.
                if not budget.try_spend():
                    self.metrics.retry_budget_exhausted.labels(backend).inc()
                    why = f"; last error: {last}" if last else " (a fallback after failed tries is a retry)"
                    raise _BackendExhausted(f"retry budget exhausted{why}", attempt - 1)
            if attempt > 1:
                self.metrics.retries.labels(backend).inc()
                # Jitter around a doubling base: spreads the retries of many clients.
                await asyncio.sleep(self.backoff_base_s * 2 ** (attempt - 2) * self._rng.uniform(0.5, 1.5))
            tried.add(endpoint.url)
            try:
                return await self._try(arm, backend, endpoint, images, self.try_timeout_s, attempt), attempt
            except _TryFailed as exc:
                last = exc
        raise _BackendExhausted(f"{self.max_retries + 1} tries failed; last error: {last}", self.max_retries + 1)

    def _pick(self, backend: str, tried: set[str], last: _TryFailed | None) -> Endpoint | None:
        """A replica not yet tried; else, after a fast failure, an available one already tried (docstring)."""
        endpoint = self.balancer.pick(backend, exclude=tried)
        if endpoint is None and last is not None and not last.timed_out:
            endpoint = self.balancer.pick(backend)  # ejected replicas are unavailable: never re-picked
        return endpoint

    async def _try(self, arm: Arm, backend: str, endpoint, images: Sequence[str], timeout_s: float,
                   attempt: int, shadow: bool = False) -> HashResponse:
        attrs = {"servestack.route": arm.route, "servestack.arm": arm.name, "servestack.arm_reason": arm.reason,
                 "servestack.backend": backend,
                 "servestack.attempt": attempt, "servestack.shadow": shadow, "server.address": endpoint.url,
                 "servestack.images": len(images)}
        m = self.metrics
        with traced(self.tracer, "upstream.hash", attrs, kind=SpanKind.CLIENT) as span:
            endpoint.inflight += 1
            m.inflight.labels(backend).inc()
            start = time.perf_counter()
            outcome = "error"
            try:
                # asyncio.timeout as well as the client's: it bounds the whole call, pool wait included.
                async with asyncio.timeout(timeout_s):
                    response = await self.client.hash(endpoint.url, images, timeout_s=timeout_s,
                                                      headers=dict(inject_headers({})))
                outcome = "ok"
            except HasherRejected as exc:
                outcome = "rejected"
                self.balancer.report_success(backend, endpoint)  # the replica answered: the input was bad
                raise UpstreamRejected(f"{backend} refused the input: {exc}") from exc
            except TimeoutError as exc:
                outcome = "timeout"
                self._failed(backend, endpoint, span, f"timeout after {timeout_s:g}s")
                raise _TryFailed(f"{endpoint.url}: timeout after {timeout_s:g}s", timed_out=True) from exc
            except HasherUnavailable as exc:
                outcome = "timeout" if isinstance(exc.__cause__, httpx.TimeoutException) else "error"
                self._failed(backend, endpoint, span, str(exc))
                raise _TryFailed(f"{endpoint.url}: {exc}", timed_out=outcome == "timeout") from exc
            finally:
                endpoint.inflight -= 1
                m.inflight.labels(backend).dec()
                m.upstream_requests.labels(arm.route, arm.name, backend, outcome).inc()
                m.upstream_duration.labels(arm.route, arm.name, backend).observe(time.perf_counter() - start)
            self.balancer.report_success(backend, endpoint)
            return response

    def _failed(self, backend: str, endpoint, span, message: str) -> None:
        mark_error(span, message)
        if self.balancer.report_failure(backend, endpoint):
            span.add_event("replica ejected", {"server.address": endpoint.url})


class _TryFailed(Exception):
    """One try failed in a retryable way."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out  # a hanging replica: retry elsewhere, never on the same one
