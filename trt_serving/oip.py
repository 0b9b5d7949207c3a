"""Open Inference Protocol (KServe v2) over HTTP, with Triton's binary tensor data extension.

The protocol's meaning lives in ``oip_core.py`` (shared with gRPC); this module parses the HTTP
framing. BYTES input: binary extension (4-byte little-endian length + bytes per element) or JSON
base64 strings; FP32: binary or JSON numbers. Outputs are binary when the request asks
(``binary_data_output`` / per-output ``binary_data``), which is what ``tritonclient.http`` does by
default.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from trt_serving import oip_core
from trt_serving.dataplane import DataPlane
from trt_serving.deadlines import CLIENT_CLOSED, ClientGone, deadline_from, until_disconnect
from trt_serving.errors import InvalidInput

router = APIRouter(prefix="/v2")
HEADER_LENGTH = "Inference-Header-Content-Length"


def _dp(request: Request) -> DataPlane:
    return request.app.state.dataplane  # type: ignore[no-any-return]


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": oip_core.SERVER_NAME, "version": oip_core.SERVER_VERSION, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live(request: Request) -> Response:
    dp = _dp(request)
    if dp.load_error is not None:  # no engine will ever load: let the orchestrator restart us
        return JSONResponse({"live": False, "error": f"no_engine: {dp.load_error}", "code": "no_engine"}, 503)
    return JSONResponse({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    dp = _dp(request)
    if dp.serving is None:
        reason = dp.load_error or "the engine is still loading"
        return JSONResponse({"ready": False, "error": f"not_ready: {reason}", "code": "not_ready"}, 503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"ready": True})


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> Response:
    oip_core.check_model(_dp(request), name, version)
    return await ready(request)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    dp = _dp(request)
    oip_core.check_model(dp, name, version)
    return oip_core.model_metadata(dp)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    try:
        n = len(body) if header_length is None else int(header_length)
        if not 0 <= n <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {n} exceeds the body ({len(body)} bytes)")
        header = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"inference request is not valid JSON: {exc}", code="invalid_request") from exc
    outputs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(outputs or [], list) \
            or not all(isinstance(o, dict) for o in outputs or []):
        raise InvalidInput("inference request must be a JSON object; 'outputs' a list of objects",
                           code="invalid_request")
    return header, body[n:]


def _bytes_elements(tensor: dict[str, Any], raw: bytes | None) -> list[bytes]:
    if raw is not None:
        return oip_core.split_bytes(raw)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InvalidInput("BYTES input needs 'data' (base64 strings) or binary data", code="invalid_request")
    out = []
    for i, item in enumerate(np.array(data, dtype=object).ravel().tolist()):
        try:
            out.append(base64.b64decode(str(item), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"BYTES element {i} is not base64: {exc}", code="invalid_base64") from exc
    return out


async def _inputs(dp: DataPlane, header: dict[str, Any], rest: bytes) -> np.ndarray:
    tensors = header.get("inputs")
    oip_core.check_one_input(len(tensors) if isinstance(tensors, list) else 0)
    tensor = tensors[0]  # type: ignore[index]
    if not isinstance(tensor, dict):
        raise InvalidInput("an input must be a JSON object", code="invalid_request")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise InvalidInput("binary_data_size must be a non-negative integer", code="invalid_request")
    raw = None if size is None else rest[:size]
    if raw is not None and len(raw) != size:
        raise InvalidInput("binary tensor data is shorter than binary_data_size", code="invalid_request")
    datatype = tensor.get("datatype")
    oip_core.check_datatype(datatype)
    if datatype == "BYTES":
        return await oip_core.images_input(dp, _bytes_elements(tensor, raw))
    values = raw if raw is not None else tensor.get("data")
    return oip_core.tensor_input(dp, oip_core.fp32_tensor(values, tensor.get("shape")))


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    dp = _dp(request)
    oip_core.check_model(dp, name, version)
    deadline = deadline_from(request.headers, dp.settings.request_timeout_s)
    dp.require()
    header, rest = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    params = header.get("parameters") or {}
    specs = {spec.get("name"): spec for spec in header.get("outputs") or []}

    async def run() -> list[oip_core.Tensor]:
        return await oip_core.infer(dp, await _inputs(dp, header, rest), list(specs), deadline)

    try:
        tensors = await until_disconnect(request.receive, run())
    except ClientGone:
        request.app.state.metrics.dropped.labels(reason="client_gone").inc()
        return Response(status_code=CLIENT_CLOSED)
    out_json, blobs = [], []
    for tensor in tensors:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.array.shape)}
        spec = specs.get(tensor.name) or {}
        if (spec.get("parameters") or {}).get("binary_data", params.get("binary_data_output", False)):
            blob = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.array.ravel().tolist()
        out_json.append(entry)
    body: dict[str, Any] = {
        "model_name": dp.settings.model, "model_version": dp.settings.version, "outputs": out_json,
        "parameters": oip_core.engine_parameters(dp),
    }
    if "id" in header:
        body["id"] = header["id"]
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})
