"""PyTorch CUDA engine: fp32/fp16/bf16 with CUDA graphs (or ``torch.compile``) per fixed batch bucket.

The GPU path a machine without TensorRT can run. Three modes (``cuda.json``'s ``mode``):

- ``graphs`` (default): each bucket's eager forward is captured once into a CUDA graph
  (``torch.cuda.CUDAGraph``) and replayed; capture takes a second, not a compile, so a pod can
  capture every bucket before it turns ready.
- ``inductor``: ``torch.compile(mode="reduce-overhead")`` (Inductor kernels + CUDA graphs); each
  bucket compiles on first use, tens of seconds for ResNet50: for measurement, not the request path.
- ``eager``: plain eager forward (cuDNN autotuned), the baseline.

CUDA graphs need static shapes, so a batch is padded up to the next bucket (1, 8, 32, 64, 128,
256). Graph outputs live in static buffers that the next replay overwrites: they are copied to
host memory before returning.

Out of device memory (``torch.cuda.OutOfMemoryError``): the engine frees the cached blocks, halves
the batch and runs the halves, and keeps that smaller row limit for later batches; a single row
that still does not fit raises :class:`DeviceOutOfMemory` (that batch fails, the engine stays usable).

``SERVESTACK_CUDA_ENGINE_DEVICE=cpu`` runs the same engine (eager only) on the CPU: the GPU check's
dry run uses it so its code path cannot rot between GPU leases.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable, Outputs, check_batch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
MODES = ("graphs", "inductor", "eager")
BUCKETS = (1, 8, 32, 64, 128, 256)
DEVICE_ENV = "SERVESTACK_CUDA_ENGINE_DEVICE"


class DeviceOutOfMemory(RuntimeError):
    """Even one row does not fit in device memory."""


def bucket_for(n: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket holding ``n`` rows (requests beyond the largest bucket are chunked)."""
    if n < 1:
        raise ValueError(f"batch must hold at least one row, got {n}")
    i = bisect.bisect_left(buckets, n)
    return buckets[min(i, len(buckets) - 1)]


def _torch_on(device: str) -> Any:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable("the cuda backend needs a CUDA device; torch.cuda.is_available() is False")
    return torch


def _torch_cuda() -> Any:
    return _torch_on(os.environ.get(DEVICE_ENV, "cuda"))


class CudaEngine(Engine):
    backend = "cuda"

    def __init__(self, net: Any, precision: str, *, mode: str = "graphs", buckets: tuple[int, ...] = BUCKETS,
                 warmup: bool = False, device: str = "cuda"):
        torch = _torch_on(device)
        if precision not in PRECISIONS:
            raise EngineUnavailable(f"cuda engine runs {PRECISIONS}, not {precision}")
        if mode not in MODES:
            raise EngineUnavailable(f"cuda engine modes are {MODES}, not {mode!r}")
        if device != "cuda" and mode != "eager":
            raise EngineUnavailable(f"mode {mode} needs CUDA; on {device} only eager runs")
        self.precision = precision
        self.mode = mode
        self.device = device
        self._torch = torch
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self._buckets = buckets
        self.max_rows = buckets[-1]  # lowered when a batch runs out of device memory
        self.oom_splits = 0
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        self._net = net.to(device, dtype=self.dtype).to(memory_format=torch.channels_last).eval()
        # reduce-overhead = CUDA graphs; dynamic=False so each bucket gets its own static graph.
        self._fn = (torch.compile(self._net, mode="reduce-overhead", dynamic=False) if mode == "inductor"
                    else self._net)
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        if warmup:
            for b in buckets:
                self.run(np.zeros((b, 3, 224, 224), np.float32))

    def _captured(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        """(graph, static input, static outputs) for one padded shape, captured on first use."""
        entry = self._graphs.get(shape)
        if entry is None:
            torch = self._torch
            static_x = torch.zeros(shape, dtype=self.dtype, device="cuda").contiguous(
                memory_format=torch.channels_last)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # cuDNN picks its algorithms and the allocator warms up
                for _ in range(2):
                    self._net(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._net(static_x)
            entry = self._graphs[shape] = (graph, static_x, static_out)
        return entry

    def forward_device(self, x: Any) -> tuple[Any, Any]:
        """A device tensor already padded to a bucket, in the engine's dtype -> (features, logits) on the
        device. For graphs mode the outputs are static buffers: read them before the next call."""
        if self.mode == "graphs":
            graph, static_x, static_out = self._captured(tuple(x.shape))
            static_x.copy_(x)
            graph.replay()
            return static_out
        return self._fn(x)

    def _forward(self, batch: np.ndarray) -> Outputs:
        torch = self._torch
        n = len(batch)
        padded = bucket_for(n, self._buckets)
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if padded > n:
            x = torch.cat([x, x.new_zeros((padded - n, *x.shape[1:]))])
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            f, logits = self.forward_device(x)
            return Outputs(features=f[:n].float().cpu().numpy(), logits=logits[:n].float().cpu().numpy())

    def _run_fitting(self, batch: np.ndarray) -> Outputs:
        """Run ``batch``; out of device memory, free the cache, halve and remember the smaller limit."""
        try:
            return self._forward(batch)
        except self._torch.OutOfMemoryError as exc:
            self._graphs.pop(tuple((bucket_for(len(batch), self._buckets), *batch.shape[1:])), None)
            if self.device == "cuda":
                self._torch.cuda.empty_cache()
            if len(batch) == 1:
                raise DeviceOutOfMemory(f"one {batch.shape[1:]} row does not fit in {self.device} memory") from exc
            half = (len(batch) + 1) // 2
            self.max_rows = min(self.max_rows, half)
            self.oom_splits += 1
            log.warning("out of device memory: batch split", extra={"rows": len(batch), "max_rows": self.max_rows})
            return _concat([self._run_fitting(batch[:half]), self._run_fitting(batch[half:])])

    def run(self, batch: np.ndarray) -> Outputs:
        batch = check_batch(batch)
        step = self.max_rows
        if len(batch) <= step:
            return self._run_fitting(batch)
        return _concat([self._run_fitting(batch[i:i + step]) for i in range(0, len(batch), step)])

    def close(self) -> None:
        self._graphs.clear()
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def _concat(parts: list[Outputs]) -> Outputs:
    return Outputs(features=np.concatenate([p.features for p in parts]),
                   logits=np.concatenate([p.logits for p in parts]))


def build(ctx: BuildContext) -> list[str]:
    _torch_cuda()  # refuse early on a host without CUDA
    if ctx.precision not in PRECISIONS:
        raise EngineUnavailable(f"cuda engine runs {PRECISIONS}, not {ctx.precision}")
    shutil.copyfile(ctx.weights_dir / "weights.pt", ctx.out_dir / "weights.pt")
    (ctx.out_dir / "cuda.json").write_text(json.dumps({"buckets": list(BUCKETS), "mode": "graphs"}))
    return ["weights.pt", "cuda.json"]


def load(artifact_dir: Path, precision: str, threads: int) -> Engine:
    from trt_serving.model import weights as weights_io

    device = os.environ.get(DEVICE_ENV, "cuda")
    _torch_on(device)
    net, _card = weights_io.load(artifact_dir)
    config = json.loads((artifact_dir / "cuda.json").read_text())
    mode = config.get("mode", "graphs") if device == "cuda" else "eager"
    # On CUDA every bucket is captured before the pod turns ready: no capture on the request path.
    return CudaEngine(net, precision, mode=mode, buckets=tuple(config["buckets"]), warmup=device == "cuda",
                      device=device)
