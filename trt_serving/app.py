"""The hasher pod's FastAPI app: ``create_app(settings)`` builds everything, the lifespan loads.

The engine loads in the background after start-up (it may build a missing artifact): liveness
answers at once, readiness turns 200 when an engine serves. Blocking work (engine selection,
inference) runs in the single engine thread; image decoding in a small pool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from tracing import Telemetry, TraceMiddleware, TracingSettings, register_span_metrics, setup_telemetry
from trt_serving.batcher import DynamicBatcher
from trt_serving.config import HasherSettings
from trt_serving.dataplane import DataPlane, Serving
from trt_serving.endpoints import document_limits
from trt_serving.endpoints import router as v1_router
from trt_serving.errors import HasherError
from trt_serving.metrics import HasherMetrics, RequestMetricsMiddleware
from trt_serving.oip import router as oip_router
from trt_serving.oip_grpc_server import start_grpc_server, stop_grpc_server
from trt_serving.selection import NoEngine, select_engine

log = logging.getLogger(__name__)


def _error(request: Request, status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """The project's ``{"error": {"code", "message"}}``; under ``/v2`` the Open Inference Protocol's
    ``{"error": "<string>"}`` (stock clients such as tritonclient require a string there), with the
    code as a prefix and also as a sibling field."""
    if request.url.path.startswith("/v2/"):
        body: dict[str, object] = {"error": f"{code}: {message}", "code": code}
    else:
        body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _load(app: FastAPI) -> None:
    settings: HasherSettings = app.state.settings
    dataplane: DataPlane = app.state.dataplane
    loop = asyncio.get_running_loop()
    try:
        selected = await loop.run_in_executor(app.state.engine_pool, select_engine, settings)
    except NoEngine as exc:
        dataplane.load_error = str(exc)
        log.error("no engine could be loaded", extra={"reason": str(exc)})
        return
    batcher = DynamicBatcher(
        selected.engine.run, app.state.engine_pool, max_batch_size=settings.max_batch_size,
        max_queue_delay_us=settings.max_queue_delay_us, max_queue_size=settings.max_queue_size,
        tracer=app.state.telemetry.tracer, metrics=app.state.metrics,
    )
    batcher.start()
    info = selected.info
    app.state.metrics.set_engine(info.model, info.version, info.backend, info.precision)
    if settings.gc_freeze:
        # Everything alive now lives as long as the pod; freeze it before readiness turns 200.
        # Unfrozen, under load at concurrency 64 (fingerprint, OpenVINO int8) each full collection
        # walked ~220k start-up objects (torch, OpenVINO, FastAPI) for ~165 ms with the GIL held,
        # stalling the event loop and the decode workers. A/B in one run, 4 rounds: 342 vs 314
        # img/s, p99 252 vs 364 ms. Frozen objects are skipped by every later collection.
        gc.collect()
        gc.freeze()
    dataplane.serving = Serving(selected=selected, batcher=batcher)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: HasherSettings = app.state.settings
    grpc_server = None
    if settings.grpc_port is not None:
        grpc_server, app.state.grpc_port = await start_grpc_server(app.state.dataplane, settings.host,
                                                                   settings.grpc_port)
    loader = asyncio.create_task(_load(app), name="hasher-engine-load")
    app.state.loader = loader
    try:
        yield
    finally:
        if grpc_server is not None:
            await stop_grpc_server(grpc_server)
        if not loader.done():
            # Selection runs in a thread that cannot be interrupted; wait for it so the engine closes.
            loader.cancel()
        await asyncio.gather(loader, return_exceptions=True)
        serving = app.state.dataplane.serving
        if serving is not None:
            await serving.batcher.stop()
            await asyncio.get_running_loop().run_in_executor(app.state.engine_pool, serving.selected.engine.close)
            app.state.dataplane.serving = None
        app.state.engine_pool.shutdown(wait=True)
        app.state.decode_pool.shutdown(wait=True)
        app.state.telemetry.shutdown()


def create_app(settings: HasherSettings, *, tracing: TracingSettings | None = None) -> FastAPI:
    telemetry: Telemetry = setup_telemetry("servestack-hasher", settings.version, tracing)
    app = FastAPI(title=f"ServeStack hasher ({settings.model} v{settings.version})", lifespan=lifespan)
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.metrics = HasherMetrics(CollectorRegistry())
    register_span_metrics(app.state.metrics.registry, "servestack_hasher_spans_dropped_total", telemetry)
    app.state.engine_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hasher-engine")
    app.state.decode_pool = ThreadPoolExecutor(max_workers=settings.decode_workers,
                                               thread_name_prefix="hasher-decode")
    app.state.dataplane = DataPlane(settings, app.state.decode_pool, telemetry.tracer)
    app.include_router(oip_router)
    app.include_router(v1_router)
    document_limits(app, settings.max_image_bytes)

    @app.exception_handler(HasherError)
    async def _hasher_error(request: Request, exc: HasherError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # As every component: 422 invalid_request, "loc: msg" of the first ten problems (never the
        # input: it may be an image). The Open Inference Protocol's routes keep its 400.
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}"
                             for e in exc.errors()[:10]) or "invalid request"
        status = 400 if request.url.path.startswith("/v2/") else 422
        return _error(request, status, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(request, exc.status_code, code, str(exc.detail), exc.headers)  # 405: Allow

    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(TraceMiddleware, tracer=telemetry.tracer)
    return app
