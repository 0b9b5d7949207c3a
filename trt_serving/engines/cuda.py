"""PyTorch CUDA engine: fp32/fp16/bf16, ``torch.compile`` with CUDA graphs per fixed batch bucket.

The GPU path a machine without TensorRT can run. CUDA graphs need static shapes, so a batch is
padded up to the next bucket (1, 8, 32, 64, 128, 256); each bucket compiles and captures once, on
first use ("lazy"), or up front with ``warmup``. Outputs of a graph replay live in static buffers
that the next replay overwrites: they are copied to host memory before returning.
"""

from __future__ import annotations

import bisect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable, Outputs, check_batch

PRECISIONS = ("fp32", "fp16", "bf16")
BUCKETS = (1, 8, 32, 64, 128, 256)


def bucket_for(n: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket holding ``n`` rows (requests beyond the largest bucket are chunked)."""
    if n < 1:
        raise ValueError(f"batch must hold at least one row, got {n}")
    i = bisect.bisect_left(buckets, n)
    return buckets[min(i, len(buckets) - 1)]


def _torch_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailable("the cuda backend needs a CUDA device; torch.cuda.is_available() is False")
    return torch


class CudaEngine(Engine):
    backend = "cuda"

    def __init__(self, net: Any, precision: str, *, compile_graphs: bool = True,
                 buckets: tuple[int, ...] = BUCKETS, warmup: bool = False):
        torch = _torch_cuda()
        if precision not in PRECISIONS:
            raise EngineUnavailable(f"cuda engine runs {PRECISIONS}, not {precision}")
        self.precision = precision
        self._torch = torch
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self._buckets = buckets
        torch.backends.cudnn.benchmark = True
        net = net.to("cuda", dtype=self._dtype).to(memory_format=torch.channels_last).eval()
        # reduce-overhead = CUDA graphs; dynamic=False so each bucket gets its own static graph.
        self._fn = torch.compile(net, mode="reduce-overhead", dynamic=False) if compile_graphs else net
        if warmup:
            for b in buckets:
                self._forward(np.zeros((b, 3, 224, 224), np.float32))

    def _forward(self, batch: np.ndarray) -> Outputs:
        torch = self._torch
        n = len(batch)
        padded = bucket_for(n, self._buckets)
        x = torch.from_numpy(batch).to("cuda", non_blocking=True)
        if padded > n:
            x = torch.cat([x, x.new_zeros((padded - n, *x.shape[1:]))])
        x = x.to(self._dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            f, logits = self._fn(x)
            out = Outputs(features=f[:n].float().cpu().numpy(), logits=logits[:n].float().cpu().numpy())
        return out

    def run(self, batch: np.ndarray) -> Outputs:
        batch = check_batch(batch)
        top = self._buckets[-1]
        if len(batch) <= top:
            return self._forward(batch)
        parts = [self._forward(batch[i:i + top]) for i in range(0, len(batch), top)]
        return Outputs(features=np.concatenate([p.features for p in parts]),
                       logits=np.concatenate([p.logits for p in parts]))


def build(ctx: BuildContext) -> list[str]:
    _torch_cuda()  # refuse early on a host without CUDA
    if ctx.precision not in PRECISIONS:
        raise EngineUnavailable(f"cuda engine runs {PRECISIONS}, not {ctx.precision}")
    shutil.copyfile(ctx.weights_dir / "weights.pt", ctx.out_dir / "weights.pt")
    (ctx.out_dir / "cuda.json").write_text(json.dumps({"buckets": list(BUCKETS), "compile": "reduce-overhead"}))
    return ["weights.pt", "cuda.json"]


def load(artifact_dir: Path, precision: str, threads: int) -> Engine:
    from trt_serving.model import weights as weights_io

    _torch_cuda()
    net, _card = weights_io.load(artifact_dir)
    config = json.loads((artifact_dir / "cuda.json").read_text())
    return CudaEngine(net, precision, buckets=tuple(config["buckets"]))
