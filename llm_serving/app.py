"""The explainer pod's FastAPI app: ``create_app(settings)`` builds everything, the lifespan runs it.

The vLLM engine starts in a background task once the server is up, so /healthz answers during
the ~25 s model load and /readyz says 503 until the engine is ready (``servestack up`` and the
Kubernetes readiness probe wait on it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llm_serving.config import ExplainerSettings
from llm_serving.endpoints import document_request_body, router
from llm_serving.errors import ExplainerError, NotReady
from llm_serving.explain import ExplainOptions, ExplainService
from llm_serving.generator import Generator
from llm_serving.metrics import ExplainerMetrics
from llm_serving.prepare import DEFAULT_MODEL_NAME
from tracing import Telemetry, TraceMiddleware, register_span_metrics, setup_telemetry

log = logging.getLogger(__name__)
SERVICE_NAME = "servestack-explainer"
RETRY_AFTER_S = 5


def _version() -> str:
    try:
        return version("servestack")
    except PackageNotFoundError:
        return "0.0.0"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_explainer_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ExplainerError)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, NotReady) else None
        return _error(exc.status_code, exc.code, exc.message, headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # As every component: 422 invalid_request, "loc: msg" of the first ten problems.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ())) or 'body'}: {err.get('msg', 'invalid')}"
            for err in exc.errors()[:10]
        )
        return _error(422, "invalid_request", problems or "invalid request")

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    app.add_exception_handler(ExplainerError, on_explainer_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)


def _default_generator(settings: ExplainerSettings) -> Generator:
    from llm_serving.vllm_generator import VllmGenerator

    name = settings.served_model_name or (settings.model_dir.name if settings.model_dir else DEFAULT_MODEL_NAME)
    return VllmGenerator(settings, settings.model_dir, name, cache_dir=Path(settings.cache_dir))


async def _start_engine(app: FastAPI) -> None:
    generator: Generator = app.state.explain_service.generator
    try:
        await generator.start()
        engine = getattr(generator, "engine", None)
        if engine is not None:  # the real vLLM engine: its OpenAI serving state too
            from llm_serving.openai_routes import init_openai_state

            await init_openai_state(app, engine, generator.cli_args, generator.supported_tasks)  # type: ignore[attr-defined]
        app.state.metrics.engine_info.labels(model=generator.model, backend=generator.backend).set(1)
    except Exception as exc:  # /healthz reports it (503) so that the orchestrator restarts the pod
        log.exception("the explainer engine failed to start")
        app.state.engine_failure = f"{type(exc).__name__}: {exc}"


def create_app(
    settings: ExplainerSettings,
    *,
    generator: Generator | None = None,
    telemetry: Telemetry | None = None,
    include_global_metrics: bool = True,
) -> FastAPI:
    """Build the explainer app.

    Args:
        settings: validated settings.
        generator: the model seam; default the embedded vLLM engine (tests inject their own).
        telemetry: tracer provider (tests pass one with an in-memory exporter).
        include_global_metrics: also export prometheus_client's global registry (vLLM's metrics).
    """
    telemetry = telemetry or setup_telemetry(SERVICE_NAME, _version())
    metrics = ExplainerMetrics(include_global=include_global_metrics)
    register_span_metrics(metrics.registry, "servestack_explainer_spans_dropped_total", telemetry)
    real_engine = generator is None
    generator = generator or _default_generator(settings)
    options = ExplainOptions(
        max_tokens=settings.max_tokens, temperature=settings.temperature,
        retry_temperature=settings.retry_temperature, timeout_s=settings.request_timeout_s,
    )
    service = ExplainService(generator, options, metrics, telemetry.tracer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starter = asyncio.create_task(_start_engine(app), name="explainer-engine-start")
        app.state.engine_starter = starter
        try:
            yield
        finally:
            if not starter.done():
                starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
            await generator.close()
            telemetry.shutdown()

    app = FastAPI(title="ServeStack explainer", version=_version(), lifespan=lifespan)
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.metrics = metrics
    app.state.explain_service = service
    app.state.engine_failure = None
    app.include_router(router)
    document_request_body(app)
    if real_engine:
        from vllm.entrypoints.serve.exception_handling.register import init_exception_handler

        from llm_serving.openai_routes import attach_openai_routes

        init_exception_handler(app)  # vLLM's error format on its OpenAI routes ...
        attach_openai_routes(app)
    _install_error_handlers(app)  # ... ours (registered last, so they win) on the rest
    app.add_middleware(TraceMiddleware, tracer=telemetry.tracer)
    return app
