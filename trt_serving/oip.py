"""Open Inference Protocol (KServe v2) endpoints, with Triton's binary tensor data extension.

Model name = the modality (``face`` / ``fingerprint``), version = the model version. Inputs: one
tensor, either BYTES [N] of encoded images (binary extension: 4-byte little-endian length + bytes
per element; JSON form: base64 strings) or FP32 [N, 3, S, S] already preprocessed. Outputs:
``codes`` UINT8 [N, 16] and ``features`` FP32 [N, 512]; all of them when the request names none
(as the protocol says), binary when the request asks (``binary_data_output`` / per-output
``binary_data``), which is what ``tritonclient.http`` does by default.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from trt_serving.dataplane import DataPlane
from trt_serving.deadlines import CLIENT_CLOSED, ClientGone, deadline_from, until_disconnect
from trt_serving.engines.base import Outputs
from trt_serving.errors import InvalidInput, ModelNotFound
from trt_serving.schemas import CODE_BYTES

router = APIRouter(prefix="/v2")
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_IMAGES = 64  # the same limit as HashRequest.images on /v1/hash


def _dp(request: Request) -> DataPlane:
    return request.app.state.dataplane  # type: ignore[no-any-return]


def _check_model(dp: DataPlane, name: str, version: str | None) -> None:
    if name != dp.settings.model:
        raise ModelNotFound(f"model {name!r} is not served here (this pod serves {dp.settings.model!r})")
    if version is not None and version != dp.settings.version:
        raise ModelNotFound(f"{name} version {version!r} is not served here "
                            f"(this pod serves version {dp.settings.version!r})")


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "servestack-hasher", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


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
    dp = _dp(request)
    _check_model(dp, name, version)
    return await ready(request)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    dp = _dp(request)
    _check_model(dp, name, version)
    serving = dp.require()
    info, manifest = serving.info, serving.selected.manifest
    size = serving.selected.card.preprocessing.input_size
    return {
        "name": dp.settings.model,
        "versions": [dp.settings.version],
        "platform": f"servestack_{info.backend}",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, size, size]},
        ],
        "outputs": [
            {"name": "codes", "datatype": "UINT8", "shape": [-1, CODE_BYTES]},
            {"name": "features", "datatype": "FP32", "shape": [-1, 512]},
        ],
        # What actually serves, never the configured wish (OIP parameters hold scalars).
        "parameters": {
            "backend": info.backend, "precision": info.precision,
            "fallback_from": ",".join(info.fallback_from),
            "bit_agreement_vs_fp32": manifest["bit_agreement"]["value"],
            "max_batch_size": dp.settings.max_batch_size,
            "preprocessing": serving.selected.card.preprocessing.color,
        },
    }


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    try:
        if header_length is None:
            return json.loads(body), b""
        n = int(header_length)
        if not 0 <= n <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {n} exceeds the body ({len(body)} bytes)")
        return json.loads(body[:n]), body[n:]
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"inference request is not valid JSON: {exc}", code="invalid_request") from exc


def _bytes_elements(tensor: dict[str, Any], raw: bytes | None) -> list[bytes]:
    if raw is None:
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
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("BYTES tensor data is cut inside a length prefix", code="invalid_request")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise InvalidInput("BYTES tensor element is longer than the data sent", code="invalid_request")
        out.append(raw[offset:offset + n])
        offset += n
    return out


def _fp32_tensor(tensor: dict[str, Any], raw: bytes | None) -> np.ndarray:
    shape = tensor.get("shape")
    try:
        if raw is not None:
            arr = np.frombuffer(raw, dtype="<f4")
        else:
            arr = np.asarray(tensor.get("data"), dtype=np.float32)
        return arr.reshape(shape).astype(np.float32, copy=False)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"FP32 input does not match its shape {shape}: {exc}", code="invalid_shape") from exc


async def _inputs(dp: DataPlane, header: dict[str, Any], rest: bytes) -> np.ndarray:
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or len(tensors) != 1:
        raise InvalidInput("send exactly one input: BYTES 'images' or FP32 'input'", code="invalid_request")
    tensor = tensors[0]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    raw = None if size is None else rest[:int(size)]
    if raw is not None and len(raw) != int(size):
        raise InvalidInput("binary tensor data is shorter than binary_data_size", code="invalid_request")
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        images = _bytes_elements(tensor, raw)
        if not 1 <= len(images) <= MAX_IMAGES:
            raise InvalidInput(f"send 1 to {MAX_IMAGES} images, got {len(images)}", code="too_many_images")
        return await dp.decode_images(images)
    if datatype == "FP32":
        tensor_in = dp.check_tensor(_fp32_tensor(tensor, raw))
        if len(tensor_in) > MAX_IMAGES:
            raise InvalidInput(f"send 1 to {MAX_IMAGES} images, got {len(tensor_in)}", code="too_many_images")
        return tensor_in
    raise InvalidInput(f"input datatype must be BYTES or FP32, got {datatype!r}", code="invalid_datatype")


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    dp = _dp(request)
    _check_model(dp, name, version)
    deadline = deadline_from(request.headers, dp.settings.request_timeout_s)
    serving = dp.require()
    header, rest = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))

    async def run() -> Outputs:
        return await dp.infer(await _inputs(dp, header, rest), deadline)

    try:
        outputs = await until_disconnect(request.receive, run())
    except ClientGone:
        request.app.state.metrics.dropped.labels(reason="client_gone").inc()
        return Response(status_code=CLIENT_CLOSED)
    params = header.get("parameters") or {}
    wanted = header.get("outputs") or [{"name": "codes"}, {"name": "features"}]
    arrays = {"codes": outputs.codes, "features": outputs.features.astype(np.float32)}
    types = {"codes": "UINT8", "features": "FP32"}
    out_json, blobs = [], []
    for spec in wanted:
        out_name = spec.get("name")
        if out_name not in arrays:
            raise InvalidInput(f"unknown output {out_name!r}; outputs are codes, features", code="invalid_request")
        arr = arrays[out_name]
        entry: dict[str, Any] = {"name": out_name, "datatype": types[out_name], "shape": list(arr.shape)}
        binary = (spec.get("parameters") or {}).get("binary_data", params.get("binary_data_output", False))
        if binary:
            blob = arr.astype("<f4" if types[out_name] == "FP32" else np.uint8).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.ravel().tolist()
        out_json.append(entry)
    info = serving.info
    body: dict[str, Any] = {
        "model_name": dp.settings.model, "model_version": dp.settings.version, "outputs": out_json,
        "parameters": {"backend": info.backend, "precision": info.precision,
                       "fallback_from": ",".join(info.fallback_from)},
    }
    if "id" in header:
        body["id"] = header["id"]
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})
