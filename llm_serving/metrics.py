"""The explainer's own Prometheus metrics (names in docs/INTERFACES.md), one registry per app.

vLLM registers its metrics (``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``,
``vllm:time_to_first_token_seconds`` ...) in prometheus_client's global REGISTRY; ``render``
exports both so that one scrape sees everything.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class ExplainerMetrics:
    def __init__(self, include_global: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._include_global = include_global
        self.requests = Counter(
            "servestack_explainer_requests_total", "Explanations answered, by source and status",
            ["source", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "servestack_explainer_request_duration_seconds", "Time to a final explanation",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttft = Histogram(
            "servestack_explainer_time_to_first_token_seconds", "Time from request to the first generated token",
            buckets=_TTFT_BUCKETS, registry=self.registry,
        )
        self.first_sentence = Histogram(
            "servestack_explainer_time_to_first_sentence_seconds",
            "Time from request to the first checked sentence (the first text a client sees)",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.generated_tokens = Counter(
            "servestack_explainer_generated_tokens_total", "Tokens generated for explanations",
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "servestack_explainer_prompt_tokens_total", "Prompt tokens of explanations", registry=self.registry,
        )
        self.grounding_failures = Counter(
            "servestack_explainer_grounding_failures_total", "Generated sentences rejected by the check",
            registry=self.registry,
        )
        self.inflight = Gauge(
            "servestack_explainer_inflight_requests", "Explanations being generated", registry=self.registry,
        )
        self.engine_info = Gauge(
            "servestack_explainer_engine_info", "The model and backend serving explanations",
            ["model", "backend"], registry=self.registry,
        )

    def render(self) -> bytes:
        ours = generate_latest(self.registry)
        return ours + generate_latest(REGISTRY) if self._include_global else ours
