"""The Open Inference Protocol's meaning, free of any transport: HTTP (``oip.py``) and gRPC
(``oip_grpc_server.py``) parse their own framing, then call these, so both answer the same codes
and the same errors for the same tensors.

Model name = the modality (``face`` / ``fingerprint``), version = the model version. One input,
either BYTES [N] of encoded images or FP32 [N, 3, S, S] already preprocessed; outputs ``codes``
UINT8 [N, 16] and ``features`` FP32 [N, 512], all of them when the request names none.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from trt_serving.dataplane import DataPlane
from trt_serving.errors import InvalidInput, ModelNotFound
from trt_serving.schemas import CODE_BYTES, MAX_IMAGES

SERVER_NAME = "servestack-hasher"
SERVER_VERSION = "0.1.0"
OUTPUT_TYPES = {"codes": "UINT8", "features": "FP32"}


@dataclass(frozen=True)
class Tensor:
    """One output: name, OIP datatype, the array in that datatype."""

    name: str
    datatype: str
    array: np.ndarray

    def raw(self) -> bytes:
        """Row-major little-endian bytes, as OIP binary data and gRPC raw contents carry them."""
        return self.array.astype("<f4" if self.datatype == "FP32" else np.uint8).tobytes()


def check_model(dp: DataPlane, name: str, version: str | None) -> None:
    """``version`` None or empty: the version this pod serves (the protocol's "server chooses")."""
    if name != dp.settings.model:
        raise ModelNotFound(f"model {name!r} is not served here (this pod serves {dp.settings.model!r})")
    if version and version != dp.settings.version:
        raise ModelNotFound(f"{name} version {version!r} is not served here "
                            f"(this pod serves version {dp.settings.version!r})")


def model_metadata(dp: DataPlane) -> dict[str, Any]:
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


def engine_parameters(dp: DataPlane) -> dict[str, str]:
    info = dp.require().info
    return {"backend": info.backend, "precision": info.precision, "fallback_from": ",".join(info.fallback_from)}


def split_bytes(raw: bytes) -> list[bytes]:
    """BYTES elements serialized as 4-byte little-endian length + bytes each."""
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


def fp32_tensor(values: bytes | Any, shape: Any) -> np.ndarray:
    """Raw little-endian bytes or a list of numbers, reshaped to ``shape``."""
    try:
        arr = np.frombuffer(values, dtype="<f4") if isinstance(values, bytes) else np.asarray(values, np.float32)
        return arr.reshape(shape).astype(np.float32, copy=False)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"FP32 input does not match its shape {shape}: {exc}", code="invalid_shape") from exc


def check_one_input(count: int) -> None:
    if count != 1:
        raise InvalidInput("send exactly one input: BYTES 'images' or FP32 'input'", code="invalid_request")


def check_datatype(datatype: object) -> None:
    if datatype not in ("BYTES", "FP32"):
        raise InvalidInput(f"input datatype must be BYTES or FP32, got {datatype!r}", code="invalid_datatype")


async def images_input(dp: DataPlane, images: list[bytes]) -> np.ndarray:
    if not 1 <= len(images) <= MAX_IMAGES:
        raise InvalidInput(f"send 1 to {MAX_IMAGES} images, got {len(images)}", code="too_many_images")
    return await dp.decode_images(images)


def tensor_input(dp: DataPlane, tensor: np.ndarray) -> np.ndarray:
    checked = dp.check_tensor(tensor)
    if len(checked) > MAX_IMAGES:
        raise InvalidInput(f"send 1 to {MAX_IMAGES} images, got {len(checked)}", code="too_many_images")
    return checked


async def infer(dp: DataPlane, inputs: np.ndarray, wanted: list[str] | None,
                deadline: float | None = None) -> list[Tensor]:
    """Run the batch (by ``deadline``, monotonic clock); ``wanted`` None or empty: every output, in order."""
    names = wanted or list(OUTPUT_TYPES)
    for name in names:
        if name not in OUTPUT_TYPES:
            raise InvalidInput(f"unknown output {name!r}; outputs are codes, features", code="invalid_request")
    outputs = await dp.infer(inputs, deadline)
    arrays = {"codes": outputs.codes, "features": outputs.features.astype(np.float32)}
    return [Tensor(name, OUTPUT_TYPES[name], arrays[name]) for name in names]
