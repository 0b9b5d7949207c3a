"""Thin HTTP layer for ``POST /v1/hash`` and ``/metrics``; the work happens in the DataPlane."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trt_serving.dataplane import DataPlane, Serving
from trt_serving.deadlines import CLIENT_CLOSED, ClientGone, deadline_from, until_disconnect
from trt_serving.errors import InvalidInput
from trt_serving.schemas import ErrorResponse, HashRequest, HashResponse, base64_length

router = APIRouter()
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
# Every status /v1/hash answers, with the body it carries (the OpenAPI schema says what is enforced).
HASH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "an image cannot be used: not an image, empty, too large "
                                                 "(max_image_bytes / max_image_pixels), unreadable"},
    422: {"model": ErrorResponse, "description": "the body does not match the schema (code invalid_request)"},
    503: {"model": ErrorResponse, "description": "not ready, or the batch queue is full", "headers": _RETRY_AFTER},
    504: {"model": ErrorResponse, "description": "the request waited past its deadline"},
}


def _dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane  # type: ignore[no-any-return]


@router.post("/v1/hash", response_model=HashResponse, response_model_exclude_none=True, responses=HASH_RESPONSES)
async def hash_images(body: HashRequest, request: Request) -> HashResponse | Response:
    dataplane = _dataplane(request)
    deadline = deadline_from(request.headers, dataplane.settings.request_timeout_s)
    serving = dataplane.require()
    try:
        return await until_disconnect(request.receive, _hash(dataplane, serving, body, deadline))
    except ClientGone:
        request.app.state.metrics.dropped.labels(reason="client_gone").inc()
        return Response(status_code=CLIENT_CLOSED)


async def _hash(dataplane: DataPlane, serving: Serving, body: HashRequest, deadline: float) -> HashResponse:
    raw: list[bytes] = []
    for i, text in enumerate(body.images):
        try:
            raw.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"image {i} is not valid base64: {exc}", code="invalid_base64") from exc
    inputs = await dataplane.decode_images(raw)
    outputs = await dataplane.infer(inputs, deadline)
    codes = outputs.codes
    return HashResponse(
        engine=serving.info,
        codes=[row.tobytes().hex() for row in codes],
        features=outputs.features.tolist() if body.include_features else None,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def document_limits(app: FastAPI, max_image_bytes: int) -> None:
    """Put this pod's image size limit into its OpenAPI schema (``maxLength`` of each base64 image)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            images = schema["components"]["schemas"]["HashRequest"]["properties"]["images"]["items"]
            images["maxLength"] = base64_length(max_image_bytes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
