"""The engine abstraction: ``Engine.infer(batch) -> codes``, one narrow method.

Every backend maps a float32 [N, 3, H, W] preprocessed batch to the model's two outputs
(features [N, 512] and projection logits [N, 128]); packing the sign bits into [N, 16] uint8
codes happens here, once, so that all backends agree on the bit order.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from trt_serving.model.hasher import pack_codes

BACKENDS = ("tensorrt", "cuda", "openvino", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INPUT_NAME = "input"
OUTPUT_NAMES = ("features", "logits")


class EngineUnavailable(RuntimeError):
    """A backend cannot run here (library missing, no CUDA, unsupported precision); says why."""


@dataclass
class Outputs:
    features: np.ndarray  # float32 [N, 512]
    logits: np.ndarray  # float32 [N, 128]

    @property
    def codes(self) -> np.ndarray:
        return pack_codes(self.logits)


class Engine(abc.ABC):
    """A loaded engine. Not thread-safe: the batcher calls it from one worker thread."""

    backend: str
    precision: str

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> Outputs:
        """float32 [N, 3, H, W] -> features and logits (float32)."""

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> codes uint8 [N, 16]."""
        return self.run(batch).codes

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing to release
        """Release native resources (sessions, CUDA graphs)."""


@dataclass(frozen=True)
class BuildContext:
    """What a backend builder gets: the fp32 network, where to write, calibration inputs."""

    weights_dir: Path  # holds weights.pt + model_card.json (trt_serving.model.weights.save)
    out_dir: Path
    precision: str
    calib_inputs: np.ndarray  # float32 [n, 3, H, W], used by int8 builds
    input_size: int
    threads: int
    max_batch_size: int = 64


class Backend(Protocol):
    """One module per backend implements these two functions (engines/<backend>.py)."""

    def build(self, ctx: BuildContext) -> list[str]:  # the files written into ctx.out_dir
        ...

    def load(self, artifact_dir: Path, precision: str, threads: int) -> Engine:
        ...


def check_batch(batch: np.ndarray) -> np.ndarray:
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a float32 [N, 3, H, W] batch, got shape {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)
