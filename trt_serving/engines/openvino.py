"""OpenVINO engine (CPU): f32, bf16 and int8 — the default engine on Intel/AMD CPUs.

- OpenVINO silently runs bf16 on AMX CPUs unless told ``INFERENCE_PRECISION_HINT: f32``; every
  precision here sets the hint explicitly, so what the manifest says is what runs.
- int8: OpenVINO itself has no post-training quantizer (that is NNCF); it reads the QDQ ONNX model
  built by ``onnx_export.quantize_qdq`` and runs it with int8 kernels. The fp32 remainder (the
  hash projection) runs under the f32 hint so the sign boundary is not blurred further.
- LATENCY hint, one stream: the batcher sends one batch at a time; THROUGHPUT would split the
  threads into streams and halve one synchronous request's speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable, Outputs, check_batch
from trt_serving.engines.onnx_export import export_onnx, quantize_qdq

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
XML = {"fp32": "model.xml", "bf16": "model.xml", "int8": "model.int8.xml"}


def _capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoEngine(Engine):
    backend = "openvino"

    def __init__(self, xml: Path, precision: str, threads: int):
        import openvino as ov

        if precision not in PRECISIONS:
            raise EngineUnavailable(f"openvino engine runs {PRECISIONS}, not {precision}")
        if precision == "bf16" and "BF16" not in _capabilities():
            raise EngineUnavailable("this CPU has no bf16 support in OpenVINO (needs AVX512-BF16 or AMX)")
        self.precision = precision
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(max(1, threads)),
            # Several pods share the cores in `servestack up`: pinning threads would make them fight.
            "ENABLE_CPU_PINNING": "NO",
        }
        self._compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(name) for name in ("features", "logits")]

    def run(self, batch: np.ndarray) -> Outputs:
        result = self._request.infer({0: check_batch(batch)}, share_inputs=True)
        return Outputs(features=np.array(result[self._outputs[0]]), logits=np.array(result[self._outputs[1]]))


def build(ctx: BuildContext) -> list[str]:
    import openvino as ov

    if ctx.precision not in PRECISIONS:
        raise EngineUnavailable(f"openvino engine runs {PRECISIONS}, not {ctx.precision}")
    onnx_path = ctx.out_dir / "model.onnx"
    export_onnx(ctx.weights_dir, onnx_path, ctx.input_size)
    source = onnx_path
    if ctx.precision == "int8":
        source = ctx.out_dir / "model.int8.onnx"
        quantize_qdq(onnx_path, source, ctx.calib_inputs)
    xml = ctx.out_dir / XML[ctx.precision]
    # Weights stay fp32 in the IR; precision is chosen at compile time by the hint.
    ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=False)
    for path in {onnx_path, source}:
        path.unlink()
    return [xml.name, xml.with_suffix(".bin").name]


def load(artifact_dir: Path, precision: str, threads: int) -> Engine:
    if precision not in PRECISIONS:
        raise EngineUnavailable(f"openvino engine runs {PRECISIONS}, not {precision}")
    return OpenVinoEngine(artifact_dir / XML[precision], precision, threads)
