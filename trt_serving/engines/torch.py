"""PyTorch eager engine: fp32 is the reference every other engine is compared against; bf16 runs
under CPU autocast with channels_last (oneDNN's bf16 kernels)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable, Outputs, check_batch
from trt_serving.model import weights as weights_io

PRECISIONS = ("fp32", "bf16")


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, net: torch.nn.Module, precision: str, threads: int):
        if precision not in PRECISIONS:
            raise EngineUnavailable(f"torch CPU engine runs {PRECISIONS}, not {precision}")
        self.precision = precision
        torch.set_num_threads(max(1, threads))
        self._net = net.eval()
        if precision == "bf16":
            self._net = self._net.to(memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> Outputs:
        x = torch.from_numpy(check_batch(batch))
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    f, logits = self._net(x.contiguous(memory_format=torch.channels_last))
            else:
                f, logits = self._net(x)
        return Outputs(features=f.float().numpy(), logits=logits.float().numpy())


def build(ctx: BuildContext) -> list[str]:
    if ctx.precision not in PRECISIONS:
        raise EngineUnavailable(f"torch CPU engine runs {PRECISIONS}, not {ctx.precision}")
    names = ["weights.pt", "model_card.json"]
    for name in names:
        shutil.copyfile(ctx.weights_dir / name, ctx.out_dir / name)
    return names


def load(artifact_dir: Path, precision: str, threads: int) -> Engine:
    net, _card = weights_io.load(artifact_dir)
    return TorchEngine(net, precision, threads)
