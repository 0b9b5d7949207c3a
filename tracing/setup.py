"""Build one TracerProvider per process from the standard OTEL_* variables.

Jaeger ingests OTLP natively (4317 gRPC, 4318 HTTP), so OTLP is the only exporter: the old
``jaeger-client`` is archived and does not run on current Python.

Variables read (the OpenTelemetry specification's names):
  OTEL_SDK_DISABLED                  "true" turns the SDK off entirely: no spans and no trace ids
                                     (trace_id fields read all zeros). To keep ids without exporting,
                                     leave the endpoint unset or set OTEL_TRACES_SAMPLER_ARG=0.
  OTEL_EXPORTER_OTLP_ENDPOINT        base URL, e.g. http://127.0.0.1:4318 (HTTP) or :4317 (gRPC)
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT full traces URL; wins over the base endpoint
  OTEL_EXPORTER_OTLP_PROTOCOL        http/protobuf (default) or grpc (also ..._TRACES_PROTOCOL)
  OTEL_EXPORTER_OTLP_INSECURE        gRPC only: "false" forces TLS on an http:// endpoint
  OTEL_TRACES_SAMPLER                parentbased_traceidratio (default), parentbased_always_on,
                                     parentbased_always_off; other samplers are refused
  OTEL_TRACES_SAMPLER_ARG            ratio for the parent-based ratio sampler (default 1.0)
  OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BSP_MAX_EXPORT_BATCH_SIZE / OTEL_BSP_SCHEDULE_DELAY /
  OTEL_BSP_EXPORT_TIMEOUT            the bounded batch processor (spans, spans, ms, ms)
  OTEL_RESOURCE_ATTRIBUTES           extra resource attributes, k=v comma-separated
  DEPLOYMENT_ENVIRONMENT             deployment.environment (default "local")
  K8S_POD_NAME / K8S_NODE_NAME / K8S_NAMESPACE_NAME  set by the Downward API in k8s/
And one of ours:
  SERVESTACK_OTLP_ENCODER            "fast" (default): OTLP/HTTP batches encoded by
                                     tracing.otlp_encode; "official": by the exporter's own
                                     protobuf classes (~3x the CPU per span; an escape hatch)
  SERVESTACK_TRACER                  "lean" (default): spans made by tracing.lean.LeanTracer;
                                     "sdk": by the SDK's own tracer (~3x the CPU per span)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from tracing.batch import BoundedBatchSpanProcessor
from tracing.lean import LeanTracer, SpanProcessors

log = logging.getLogger(__name__)

# The parent-based samplers of the specification's OTEL_TRACES_SAMPLER values. Parent-based is the
# only kind we accept: a pod must keep the router's sampling decision, or traces arrive torn.
_SAMPLERS = ("parentbased_traceidratio", "parentbased_always_on", "parentbased_always_off")


def _sample_ratio(env: Mapping[str, str]) -> float:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_traceidratio"
    if name not in _SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not supported; use one of {', '.join(_SAMPLERS)}")
    if name == "parentbased_always_on":
        return 1.0
    if name == "parentbased_always_off":
        return 0.0
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a number in [0, 1], got {raw!r}") from None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class TracingSettings:
    """Where and how much to export. ``from_env`` reads the standard OTEL_* variables."""

    endpoint: str | None = None
    protocol: str = "http/protobuf"
    sample_ratio: float = 1.0
    environment: str = "local"
    extra_resource: Mapping[str, str] = field(default_factory=dict)
    # Bounded batch processor: at most this many spans wait; beyond it spans are dropped, never
    # blocking a request.
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 500
    export_timeout_ms: int = 10_000

    # gRPC only: None = plaintext for http:// endpoints, TLS for https:// ones.
    insecure: bool | None = None
    # OTLP/HTTP only: encode with tracing.otlp_encode (False: the official encoder).
    fast_encoder: bool = True
    # Spans from tracing.lean.LeanTracer (False: the SDK's tracer).
    lean_tracer: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be within [0, 1], got {self.sample_ratio}")
        if self.protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"OTLP protocol must be http/protobuf or grpc, got {self.protocol!r}")
        if self.max_queue_size < 1 or self.max_export_batch_size < 1:
            raise ValueError("max_queue_size and max_export_batch_size must be >= 1")
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError(
                f"max_export_batch_size ({self.max_export_batch_size}) must not exceed "
                f"max_queue_size ({self.max_queue_size})"
            )
        if self.schedule_delay_ms < 1 or self.export_timeout_ms < 1:
            raise ValueError("schedule_delay_ms and export_timeout_ms must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingSettings:
        """Settings from the OTEL_* variables (module docstring); ``os.environ`` by default.

        Raises:
            ValueError: a variable holds a value the SDK would misread (refused at start-up).
        """
        env = os.environ if env is None else env
        disabled = env.get("OTEL_SDK_DISABLED", "").lower() == "true"
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        ).strip()
        endpoint: str | None
        if disabled:
            endpoint = None
        elif traces_endpoint:
            endpoint = traces_endpoint
        elif base:
            endpoint = base.rstrip("/") + "/v1/traces" if protocol == "http/protobuf" else base
        else:
            endpoint = None
        extra: dict[str, str] = {}
        for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                extra[key.strip()] = value.strip()
        for var, attr in (
            ("K8S_POD_NAME", "k8s.pod.name"),
            ("K8S_NODE_NAME", "k8s.node.name"),
            ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
        ):
            if env.get(var):
                extra[attr] = env[var]
        insecure_raw = env.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
        encoder = env.get("SERVESTACK_OTLP_ENCODER", "fast").strip().lower() or "fast"
        if encoder not in ("fast", "official"):
            raise ValueError(f"SERVESTACK_OTLP_ENCODER must be fast or official, got {encoder!r}")
        tracer = env.get("SERVESTACK_TRACER", "lean").strip().lower() or "lean"
        if tracer not in ("lean", "sdk"):
            raise ValueError(f"SERVESTACK_TRACER must be lean or sdk, got {tracer!r}")
        defaults = cls()
        return cls(
            endpoint=endpoint,
            protocol=protocol,
            sample_ratio=_sample_ratio(env),
            environment=env.get("DEPLOYMENT_ENVIRONMENT", "local"),
            extra_resource=extra,
            max_queue_size=_env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue_size),
            max_export_batch_size=_env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaults.max_export_batch_size),
            schedule_delay_ms=_env_int(env, "OTEL_BSP_SCHEDULE_DELAY", defaults.schedule_delay_ms),
            export_timeout_ms=_env_int(env, "OTEL_BSP_EXPORT_TIMEOUT", defaults.export_timeout_ms),
            insecure=None if not insecure_raw else insecure_raw.strip().lower() == "true",
            fast_encoder=encoder == "fast",
            lean_tracer=tracer == "lean",
        )


@dataclass
class Telemetry:
    """What a process holds after setup: its provider and a tracer named after the service."""

    provider: TracerProvider
    tracer: trace.Tracer
    service_name: str
    # Upper bound on flushing at exit: a collector that is down must not hold a pod's shutdown
    # for the exporter's retry budget (tens of seconds) past Kubernetes' grace period.
    shutdown_timeout_s: float = 5.0
    # The processor in front of the exporter (None when nothing is exported).
    exporting: BoundedBatchSpanProcessor | None = None

    @property
    def spans_dropped(self) -> int:
        """Spans the export queue dropped so far because it was full (a slow or absent collector)."""
        return self.exporting.dropped if self.exporting is not None else 0

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Attach another processor (tests capture spans in memory this way)."""
        self.provider.add_span_processor(processor)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush pending spans and stop the exporter; call from the app's lifespan exit.

        The SDK's shutdown may wait for retries against an unreachable collector; it runs in a
        helper thread that is abandoned (a daemon) after ``timeout_s``, so exit stays bounded.

        Returns:
            True when the flush finished in time, False when pending spans were abandoned.
        """
        limit = self.shutdown_timeout_s if timeout_s is None else timeout_s
        worker = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            log.warning("span export did not finish within %.1f s at shutdown; pending spans dropped", limit)
            return False
        return True


def _exporter(settings: TracingSettings) -> SpanExporter:
    timeout_s = settings.export_timeout_ms / 1000
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = settings.insecure
        if insecure is None:
            insecure = not (settings.endpoint or "").startswith("https://")
        return GrpcExporter(endpoint=settings.endpoint, insecure=insecure, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from tracing.exporter import FastOTLPSpanExporter

    endpoint = settings.endpoint or ""
    # A bare collector URL (http://jaeger:4318) would POST to "/" and get 404 for every batch;
    # the OTLP/HTTP traces path is fixed by the specification.
    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    cls = FastOTLPSpanExporter if settings.fast_encoder else OTLPSpanExporter
    return cls(endpoint=endpoint, timeout=timeout_s)


def setup_telemetry(
    service_name: str,
    service_version: str,
    settings: TracingSettings | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> Telemetry:
    """Create this process's tracer provider.

    The provider is returned, not installed as the OpenTelemetry global: apps keep it on
    ``app.state`` so that several apps (tests) can live in one process. Span context still flows
    through OpenTelemetry's context variables, so ``inject_headers`` works everywhere.

    Args:
        service_name: ``service.name``, e.g. ``servestack-router``.
        service_version: ``service.version``.
        settings: export settings; ``TracingSettings.from_env()`` when omitted.
        exporter: an explicit exporter (tests); overrides the OTLP endpoint.

    Returns:
        The process's :class:`Telemetry`.
    """
    settings = settings or TracingSettings.from_env()
    attrs: dict[str, str] = {
        "service.name": service_name,
        "service.version": service_version,
        "service.namespace": "servestack",
        # Both names: semantic conventions 1.27 renamed it; Jaeger and Grafana read either.
        "deployment.environment": settings.environment,
        "deployment.environment.name": settings.environment,
    }
    attrs.update(settings.extra_resource)
    processor = SpanProcessors()  # the SDK's multi-processor that also tells the lean tracer whom to call
    provider = TracerProvider(
        resource=Resource.create(attrs),
        sampler=ParentBased(root=TraceIdRatioBased(settings.sample_ratio)),
        active_span_processor=processor,
    )
    chosen = exporter
    if chosen is None and settings.endpoint:
        chosen = _exporter(settings)
        log.info("exporting spans over OTLP (%s) to %s", settings.protocol, settings.endpoint)
    exporting = None
    if chosen is not None:
        exporting = BoundedBatchSpanProcessor(
            chosen,
            max_queue_size=settings.max_queue_size,
            max_export_batch_size=settings.max_export_batch_size,
            schedule_delay_millis=settings.schedule_delay_ms,
            export_timeout_millis=settings.export_timeout_ms,
        )
        provider.add_span_processor(exporting)
    tracer = provider.get_tracer(service_name)  # a no-op tracer when OTEL_SDK_DISABLED=true
    if settings.lean_tracer and not isinstance(tracer, trace.NoOpTracer):
        # Same sampler, resource, scope and processors; a fraction of the CPU per span.
        tracer = LeanTracer(service_name, provider.resource, processor, settings.sample_ratio)
    return Telemetry(provider=provider, tracer=tracer, service_name=service_name, exporting=exporting)
