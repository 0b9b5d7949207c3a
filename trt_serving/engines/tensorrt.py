"""TensorRT engine through torch-tensorrt's dynamo frontend; INT8 via NVIDIA ModelOpt PTQ.

NOT exercised by CI or any machine of ours: TensorRT's libraries come only from NVIDIA's package
index, and torch-tensorrt 2.14 needs torch 2.14 (we pin 2.13 for vLLM CPU). Written to the
torch-tensorrt documentation (dynamo ``compile`` with min/opt/max shapes, ``enabled_precisions``,
``torch_tensorrt.save`` as an ExportedProgram; the ModelOpt PTQ example with
``mtq.quantize(model, cfg, forward_loop)`` and export under ``export_torch_mode()``). Everything
is imported lazily; the glue is unit-tested with stand-in modules (tests/trt_serving).

The hash projection (and the 512-d embedding) stay out of quantization: int8 there would flip
bits near the sign boundary for no measurable speed.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable, Outputs, check_batch

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_FILE = "model.trt.ep"
MIN_BATCH, OPT_BATCH = 1, 32
KEEP_FP = ("*hash*", "*embed*")


def import_torch_tensorrt() -> Any:
    try:
        import torch_tensorrt
    except Exception as exc:  # ImportError, or a driver/library error raised at import time
        raise EngineUnavailable(
            f"torch-tensorrt cannot be imported ({type(exc).__name__}: {exc}); install it from NVIDIA's "
            "index with a matching torch (README, 'TensorRT')") from exc
    return torch_tensorrt


def import_modelopt() -> Any:
    try:
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.utils import export_torch_mode
    except Exception as exc:
        raise EngineUnavailable(f"INT8 TensorRT needs nvidia-modelopt ({type(exc).__name__}: {exc})") from exc
    return mtq, export_torch_mode


def quantize_int8(net: Any, calib: np.ndarray, device: str, mtq: Any) -> Any:
    """ModelOpt PTQ: INT8 weights/activations, calibrated on ``calib``; head kept in float."""
    import torch

    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    for pattern in KEEP_FP:
        cfg["quant_cfg"][pattern] = {"enable": False}

    def forward_loop(model: Any) -> None:
        with torch.no_grad():
            for i in range(0, len(calib), 16):
                model(torch.from_numpy(calib[i:i + 16]).to(device))

    return mtq.quantize(net, cfg, forward_loop)


def compile_module(net: Any, precision: str, input_size: int, max_batch: int, calib: np.ndarray, *,
                   device: str = "cuda", trt: Any = None, modelopt: Any = None) -> Any:
    """Export + TensorRT-compile ``net`` for batches 1..max_batch; returns the compiled module.

    ``trt`` / ``modelopt`` default to the real libraries; tests pass stand-ins.
    """
    import torch

    trt = trt or import_torch_tensorrt()
    if precision not in PRECISIONS:
        raise EngineUnavailable(f"tensorrt engine runs {PRECISIONS}, not {precision}")
    net = net.to(device).eval()
    mode: Any = contextlib.nullcontext()
    if precision == "int8":
        mtq, export_torch_mode = modelopt or import_modelopt()
        net = quantize_int8(net, calib, device, mtq)
        mode = export_torch_mode()
    enabled = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32},
               "int8": {torch.int8, torch.float16, torch.float32}}[precision]
    shape = (3, input_size, input_size)
    opt = min(OPT_BATCH, max_batch)
    example = torch.zeros((opt, *shape), device=device)
    batch = torch.export.Dim("batch", min=MIN_BATCH, max=max_batch)
    inputs = [trt.Input(min_shape=(MIN_BATCH, *shape), opt_shape=(opt, *shape),
                        max_shape=(max_batch, *shape), dtype=torch.float32)]
    with torch.no_grad(), mode:
        exported = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}}, strict=False)
        return trt.dynamo.compile(exported, inputs=inputs, enabled_precisions=enabled, min_block_size=1,
                                  truncate_double=True)


class TensorRtEngine(Engine):
    backend = "tensorrt"

    def __init__(self, module: Any, precision: str, device: str = "cuda"):
        import torch

        self.precision = precision
        self._torch = torch
        self._module = module
        self._device = device

    def run(self, batch: np.ndarray) -> Outputs:
        torch = self._torch
        with torch.no_grad():
            f, logits = self._module(torch.from_numpy(check_batch(batch)).to(self._device))
        return Outputs(features=f.float().cpu().numpy(), logits=logits.float().cpu().numpy())


def build(ctx: BuildContext, *, trt: Any = None, modelopt: Any = None, device: str = "cuda") -> list[str]:
    import torch

    from trt_serving.model import weights as weights_io

    trt = trt or import_torch_tensorrt()
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable("the tensorrt backend needs a CUDA device")
    net, _card = weights_io.load(ctx.weights_dir)
    compiled = compile_module(net, ctx.precision, ctx.input_size, ctx.max_batch_size, ctx.calib_inputs,
                              device=device, trt=trt, modelopt=modelopt)
    example = torch.zeros((min(OPT_BATCH, ctx.max_batch_size), 3, ctx.input_size, ctx.input_size), device=device)
    trt.save(compiled, str(ctx.out_dir / ENGINE_FILE), output_format="exported_program", inputs=[example])
    (ctx.out_dir / "tensorrt.json").write_text(json.dumps({
        "min_batch": MIN_BATCH, "opt_batch": OPT_BATCH, "max_batch": ctx.max_batch_size,
        "kept_out_of_quantization": list(KEEP_FP) if ctx.precision == "int8" else [],
    }))
    return [ENGINE_FILE, "tensorrt.json"]


def load(artifact_dir: Path, precision: str, threads: int, *, trt: Any = None, device: str = "cuda") -> Engine:
    import torch

    trt = trt or import_torch_tensorrt()  # registers TensorRT's runtime ops before loading
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable("the tensorrt backend needs a CUDA device")
    module = torch.export.load(str(artifact_dir / ENGINE_FILE)).module()
    return TensorRtEngine(module, precision, device)
