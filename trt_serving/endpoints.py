"""Thin HTTP layer for ``POST /v1/hash`` and ``/metrics``; the work happens in the DataPlane."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trt_serving.dataplane import DataPlane, Serving
from trt_serving.deadlines import CLIENT_CLOSED, ClientGone, deadline_from, until_disconnect
from trt_serving.errors import InvalidInput
from trt_serving.schemas import HashRequest, HashResponse

router = APIRouter()


def _dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane  # type: ignore[no-any-return]


@router.post("/v1/hash", response_model=HashResponse, response_model_exclude_none=True)
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
