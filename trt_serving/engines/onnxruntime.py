"""ONNX Runtime engine: fp32 (bit-exact with PyTorch, portable everywhere) and static QDQ int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trt_serving.engines.base import INPUT_NAME, OUTPUT_NAMES, BuildContext, Engine, EngineUnavailable, Outputs
from trt_serving.engines.base import check_batch as _check
from trt_serving.engines.onnx_export import export_onnx, quantize_qdq

PRECISIONS = ("fp32", "int8")
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: Path, precision: str, threads: int):
        import onnxruntime as ort

        self.precision = precision
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> Outputs:
        features, logits = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: _check(batch)})
        return Outputs(features=np.asarray(features), logits=np.asarray(logits))


def build(ctx: BuildContext) -> list[str]:
    if ctx.precision not in PRECISIONS:
        raise EngineUnavailable(f"onnxruntime engine runs {PRECISIONS}, not {ctx.precision}")
    fp32 = ctx.out_dir / FILES["fp32"]
    export_onnx(ctx.weights_dir, fp32, ctx.input_size)
    if ctx.precision == "fp32":
        return [FILES["fp32"]]
    quantize_qdq(fp32, ctx.out_dir / FILES["int8"], ctx.calib_inputs)
    fp32.unlink()
    return [FILES["int8"]]


def load(artifact_dir: Path, precision: str, threads: int) -> Engine:
    if precision not in PRECISIONS:
        raise EngineUnavailable(f"onnxruntime engine runs {PRECISIONS}, not {precision}")
    return OnnxRuntimeEngine(artifact_dir / FILES[precision], precision, threads)
