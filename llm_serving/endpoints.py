"""Thin HTTP layer: /v1/explain (JSON or SSE), health, readiness and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from llm_serving.errors import InvalidInput, NotReady, PayloadTooLarge
from llm_serving.explain import ExplainService
from llm_serving.schemas import ErrorResponse, ExplainRequest, Explanation

router = APIRouter()
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event as OpenAPI 3.1 documents a stream's items: its data is JSON text."""
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}}}


# The SSE contract: zero or more delta, then exactly one final or error (see schemas.py).
SSE_EVENT = {"oneOf": [
    _event("delta", {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
    _event("final", {"$ref": "#/components/schemas/Explanation"}),
    _event("error", {"$ref": "#/components/schemas/ErrorResponse"}),
]}
# Every status /v1/explain answers and its body (the OpenAPI schema says what is enforced).
EXPLAIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Explanation, "description": "the explanation (JSON), or server-sent events delta* final|error "
                                               "with stream=true or Accept: text/event-stream",
          "content": {"text/event-stream": {"schema": SSE_EVENT}}},
    413: {"model": ErrorResponse, "description": "the body is larger than max_body_bytes"},
    422: {"model": ErrorResponse, "description": "the body does not match the schema, or the record is "
                                                 "impossible (decision or fused_distance against its own numbers)"},
    503: {"model": ErrorResponse, "description": "the language model is not ready", "headers": _RETRY_AFTER},
}
T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "client went away": never seen by the client


class ClientDisconnected(Exception):
    pass


def _service(request: Request) -> ExplainService:
    return request.app.state.explain_service


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _parse(body: bytes) -> ExplainRequest:
    try:
        return ExplainRequest.model_validate_json(body)
    except ValidationError as exc:
        # Name each bad field and why; never echo the input values back.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidInput(f"invalid explain request: {problems}") from None


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (aborting generation).

    The body has been read already, so the next ASGI message can only be ``http.disconnect``.
    """

    async def wait_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            continue

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # let the generation's cleanup run
    raise ClientDisconnected


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _sse_stream(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[bytes]:
    # Starlette cancels this iterator when the client disconnects; closing ``events`` then closes
    # the generation, which aborts the engine request.
    try:
        async for event, payload in events:
            yield _sse(event, payload)
    except Exception as exc:  # headers are sent already: the contract's error event, not a 500
        yield _sse("error", {"error": {"code": "explain_failed", "message": type(exc).__name__}})
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.post("/v1/explain", response_model=None, responses=EXPLAIN_RESPONSES)
async def explain(request: Request) -> Response:
    body = await _read_body(request, request.app.state.settings.max_body_bytes)
    parsed = _parse(body)
    service = _service(request)
    service.validate(parsed.record)
    wants_sse = parsed.stream or "text/event-stream" in request.headers.get("accept", "")
    if wants_sse:
        return StreamingResponse(
            _sse_stream(service.events(parsed.record)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        result = await _until_disconnect(request, service.explain(parsed.record))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(result.model_dump())


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    failure = request.app.state.engine_failure
    if failure is not None:
        return JSONResponse({"status": "failed", "error": {"code": "engine_failed", "message": failure}}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    generator = _service(request).generator
    if not generator.is_ready():
        failure = request.app.state.engine_failure
        raise NotReady(f"engine failed: {failure}" if failure else "the language model is still loading")
    return JSONResponse({"status": "ready", "model": generator.model, "backend": generator.backend})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def document_request_body(app: FastAPI) -> None:
    """/v1/explain reads its body itself (size limit first); its OpenAPI entry still names the schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            body = ExplainRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["ExplainRequest"] = body
            schema["paths"]["/v1/explain"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}}},
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
