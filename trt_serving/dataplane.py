"""The pod's core, free of HTTP: decode images in the worker pool, batch, run, report the engine.

Both protocols (``/v1/hash`` and the Open Inference Protocol) call the same :class:`DataPlane`, so a
``tritonclient.http`` user and a ``/v1/hash`` user get identical codes for identical bytes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from tracing import traced
from trt_serving.batcher import DynamicBatcher
from trt_serving.config import HasherSettings
from trt_serving.engines.base import Outputs
from trt_serving.errors import InvalidImage, InvalidInput, NotReady
from trt_serving.preprocess import ImageLimits, decode
from trt_serving.schemas import EngineInfo
from trt_serving.selection import Selected


@dataclass
class Serving:
    """What is loaded once the engine is up."""

    selected: Selected
    batcher: DynamicBatcher

    @property
    def info(self) -> EngineInfo:
        return self.selected.info


class DataPlane:
    def __init__(self, settings: HasherSettings, decode_pool: ThreadPoolExecutor, tracer: trace.Tracer):
        self.settings = settings
        self._pool = decode_pool
        self._tracer = tracer
        self._limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self.serving: Serving | None = None
        self.load_error: str | None = None

    def require(self) -> Serving:
        if self.serving is None:
            reason = self.load_error or "the engine is still loading"
            raise NotReady(f"hasher not ready: {reason}", retry_after_s=5.0)
        return self.serving

    @property
    def input_size(self) -> int:
        return self.require().selected.card.preprocessing.input_size

    async def decode_images(self, images: list[bytes]) -> np.ndarray:
        """Decode every image in the pool; the first bad one fails this request with its index."""
        serving = self.require()
        pre = serving.selected.card.preprocessing
        loop = asyncio.get_running_loop()
        with traced(self._tracer, "decode_preprocess", {"hasher.images": len(images)}):
            futures = [loop.run_in_executor(self._pool, decode, data, pre, self._limits) for data in images]
            results = await asyncio.gather(*futures, return_exceptions=True)
        for i, res in enumerate(results):
            if isinstance(res, InvalidImage):
                prefix = f"image {i}: " if len(images) > 1 else ""
                raise InvalidImage(res.code, prefix + res.message)
            if isinstance(res, BaseException):
                raise res
        return np.stack(results)  # type: ignore[arg-type]

    def check_tensor(self, tensor: np.ndarray) -> np.ndarray:
        size = self.input_size
        if tensor.ndim != 4 or tensor.shape[1:] != (3, size, size) or tensor.shape[0] < 1:
            raise InvalidInput(f"FP32 input must have shape [N, 3, {size}, {size}], got {list(tensor.shape)}",
                               code="invalid_shape")
        if not np.isfinite(tensor).all():
            raise InvalidInput("FP32 input holds NaN or infinite values", code="invalid_tensor")
        return np.ascontiguousarray(tensor, dtype=np.float32)

    async def infer(self, inputs: np.ndarray, deadline: float | None = None) -> Outputs:
        """Batch and run ``inputs``; ``deadline`` (monotonic clock) defaults to the pod's request timeout."""
        serving = self.require()
        left = self.settings.request_timeout_s if deadline is None else deadline - time.monotonic()
        return await serving.batcher.submit(inputs, timeout_s=left)
