"""The ``cuda`` engine: out-of-memory splitting (on the CPU, by injecting the error) and, where CUDA
is present (``@pytest.mark.gpu``), codes against torch fp32 on the CPU and the batcher under
concurrency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from trt_serving.engines.cuda import CudaEngine, DeviceOutOfMemory
from trt_serving.model.hasher import HasherNet, bit_agreement


def _inputs(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _fail_above(engine: CudaEngine, rows: int) -> list[int]:
    """Make ``engine`` run out of memory on any padded batch over ``rows``; returns the sizes tried."""
    real, tried = engine.forward_device, []

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tried.append(len(x))
        if len(x) > rows:
            raise torch.OutOfMemoryError(f"injected: {len(x)} rows")
        return real(x)

    engine.forward_device = forward  # type: ignore[method-assign]
    return tried


def _cpu_engine() -> CudaEngine:
    torch.manual_seed(0)
    return CudaEngine(HasherNet("resnet18"), "fp32", mode="eager", buckets=(1, 2, 4, 8), device="cpu")


def test_out_of_memory_splits_the_batch_and_keeps_the_lower_limit() -> None:
    engine = _cpu_engine()
    x = _inputs(7)
    expected = engine.run(x)
    tried = _fail_above(engine, 2)
    got = engine.run(x)
    np.testing.assert_allclose(got.logits, expected.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.codes, expected.codes)
    assert engine.max_rows == 2 and engine.oom_splits >= 2
    assert max(tried) == 8 and [n for n in tried if n <= 2]  # tried the padded 8, then ran halves that fit
    tried.clear()
    assert engine.run(x[:5]).logits.shape == (5, 128)
    assert max(tried) == 2  # later batches start at the limit the split found: no failing attempt again


def test_out_of_memory_on_one_row_raises_and_the_engine_stays_usable() -> None:
    engine = _cpu_engine()
    real = engine.forward_device
    _fail_above(engine, 0)
    with pytest.raises(DeviceOutOfMemory, match="does not fit"):
        engine.run(_inputs(3))
    engine.forward_device = real  # type: ignore[method-assign]
    assert engine.run(_inputs(3)).codes.shape == (3, 16)


def test_graphs_mode_needs_cuda() -> None:
    from trt_serving.engines.base import EngineUnavailable

    with pytest.raises(EngineUnavailable, match="needs CUDA"):
        CudaEngine(HasherNet("resnet18"), "fp16", mode="graphs", device="cpu")


def _reference(cache_dir: Path, model: str) -> tuple[Path, np.ndarray, np.ndarray]:
    from trt_serving.artifacts import _reference, ensure_weights
    from trt_serving.model.hasher import ModelCard

    wdir = ensure_weights(cache_dir, model, "1")
    inputs, codes = _reference(wdir, ModelCard.from_json((wdir / "model_card.json").read_text()), 2)
    return wdir, inputs, codes


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["face", "fingerprint"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("mode", ["graphs", "eager"])
def test_cuda_codes_agree_with_cpu_fp32(cache_dir: Path, model: str, precision: str, mode: str) -> None:
    from trt_serving.model import weights as weights_io

    wdir, inputs, ref = _reference(cache_dir, model)
    engine = CudaEngine(weights_io.load(wdir)[0], precision, mode=mode)
    codes = np.concatenate([engine.infer(inputs[i:i + 24]) for i in range(0, len(inputs), 24)])  # padded buckets
    engine.close()
    assert bit_agreement(codes, ref) >= 0.97


@pytest.mark.gpu
def test_out_of_memory_split_on_the_gpu(cache_dir: Path) -> None:
    from trt_serving.model import weights as weights_io

    wdir, inputs, _ = _reference(cache_dir, "fingerprint")
    engine = CudaEngine(weights_io.load(wdir)[0], "fp16")
    expected = engine.infer(inputs[:40])
    _fail_above(engine, 8)
    got = engine.infer(inputs[:40])
    assert engine.max_rows <= 8 and bit_agreement(got, expected) >= 0.99  # buckets differ: fp16 rounding may too
    engine.close()


@pytest.mark.gpu
def test_batcher_with_cuda_engine_under_concurrency(cache_dir: Path) -> None:
    from trt_serving.batcher import DynamicBatcher
    from trt_serving.model import weights as weights_io

    wdir, inputs, ref = _reference(cache_dir, "face")
    engine = CudaEngine(weights_io.load(wdir)[0], "fp16", warmup=True)

    async def drive() -> tuple[list[np.ndarray], list[int]]:
        sizes: list[int] = []

        def run(batch: np.ndarray):  # noqa: ANN202
            sizes.append(len(batch))
            return engine.run(batch)

        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher = DynamicBatcher(run, pool, max_batch_size=32, max_queue_delay_us=5000, max_queue_size=512)
            batcher.start()
            try:
                outs = await asyncio.gather(*(batcher.submit(inputs[i:i + 1], timeout_s=60)
                                              for i in range(len(inputs))))
            finally:
                await batcher.stop()
        return [o.codes for o in outs], sizes

    codes, sizes = asyncio.run(drive())
    engine.close()
    assert sum(sizes) == len(inputs) and max(sizes) > 1  # 64 concurrent requests were batched together
    assert bit_agreement(np.concatenate(codes), ref) >= 0.97  # each request got its own rows back
