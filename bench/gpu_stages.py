"""The GPU check's stages, each run by bench/gpu_check.py as its own process (so a hung compile or a
broken CUDA context is killed by a timeout and the next stage still runs).

Each stage appends one JSON object per measured cell to ``--rows`` as soon as it has it: a stage
killed at its timeout keeps the rows it measured.

    python bench/gpu_stages.py weights --models face fingerprint
    python bench/gpu_stages.py engine --model face --mode graphs --precisions fp32 fp16 bf16 --batches 1 32 128 256
    python bench/gpu_stages.py serve --model face --precision fp16 --concurrency 64
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (trt_serving) and bench/ (bench_hasher_http)

VERSION = "1"
HELDOUT_CHUNK = 64  # the held-out set (64 images) runs as one batch: one bucket, one compile for inductor


def _emit(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def weights(args: argparse.Namespace) -> None:
    """Seeded weights and their torch fp32 reference codes, once per model (CPU work)."""
    from trt_serving.artifacts import _reference, ensure_weights
    from trt_serving.model.hasher import ModelCard

    for model in args.models:
        started = time.monotonic()
        wdir = ensure_weights(args.cache_dir, model, VERSION)
        card = ModelCard.from_json((wdir / "model_card.json").read_text())
        _reference(wdir, card, args.threads)
        _emit(args.rows, {"stage": "weights", "model": model, "seconds": round(time.monotonic() - started, 1)})


def _timed(step: Any, seconds: float, min_calls: int = 2) -> tuple[float, list[float]]:
    """(seconds per call, each call's seconds): calls ``step`` for ``seconds`` (at least ``min_calls``)."""
    laps: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(laps) < min_calls:
        t0 = time.perf_counter()
        step()
        laps.append(time.perf_counter() - t0)
    return (time.perf_counter() - started) / len(laps), laps


def _device_rate(engine: Any, x: Any, seconds: float) -> float:
    """img/s with the batch already on the device in the engine's dtype: the GPU's own rate."""
    import torch

    sync = torch.cuda.synchronize if engine.device == "cuda" else (lambda: None)

    def step() -> None:  # synchronised per call: a queue of launches must not count as done
        engine.forward_device(x)
        sync()

    with torch.inference_mode():
        step()
        per_call, _ = _timed(step, seconds)
    return len(x) / per_call


def engine(args: argparse.Namespace) -> None:
    """Engine-only img/s per precision and batch for one model and mode, with bit agreement."""
    import numpy as np
    import torch

    from trt_serving.artifacts import _reference, ensure_weights
    from trt_serving.engines.cuda import CudaEngine, bucket_for
    from trt_serving.model import weights as weights_io
    from trt_serving.model.hasher import ModelCard, bit_agreement
    from trt_serving.model.synthetic import generated_inputs

    deadline = time.monotonic() + args.budget_s
    wdir = ensure_weights(args.cache_dir, args.model, VERSION)
    card = ModelCard.from_json((wdir / "model_card.json").read_text())
    heldout, ref_codes = _reference(wdir, card, args.threads)
    heldout, ref_codes = heldout[:args.heldout], ref_codes[:args.heldout]
    size = args.input_size or card.preprocessing.input_size
    inputs = generated_inputs(max(args.batches), 4242, replace(card.preprocessing, input_size=size))
    base = {"stage": "engine", "model": args.model, "arch": card.arch, "mode": args.mode, "input_size": size}
    for precision in args.precisions:
        if time.monotonic() > deadline:
            _emit(args.rows, {**base, "precision": precision, "skipped": "stage budget spent"})
            continue
        net, _ = weights_io.load(wdir)
        t0 = time.monotonic()
        eng = CudaEngine(net, precision, mode=args.mode, device=args.device)
        codes = np.concatenate([eng.infer(heldout[i:i + HELDOUT_CHUNK]) for i in range(0, len(heldout), HELDOUT_CHUNK)])
        agreement = bit_agreement(codes, ref_codes)
        first_s = time.monotonic() - t0
        for batch in args.batches:
            row = {**base, "precision": precision, "batch": batch, "agreement": round(agreement, 4)}
            if time.monotonic() > deadline:
                _emit(args.rows, {**row, "skipped": "stage budget spent"})
                continue
            x = inputs[:batch]
            t1 = time.monotonic()
            eng.infer(x)  # this bucket's capture / compile
            warm_s = time.monotonic() - t1
            per_call, laps = _timed(lambda x=x, eng=eng: eng.infer(x), args.seconds)
            xd = torch.from_numpy(inputs[:bucket_for(batch)]).to(args.device).to(eng.dtype).contiguous(
                memory_format=torch.channels_last)
            _emit(args.rows, {**row, "img_s": round(batch / per_call, 1),
                              "p50_ms": round(float(np.median(laps)) * 1000, 2),
                              "device_img_s": round(_device_rate(eng, xd, args.seconds / 2), 1),
                              "warm_s": round(warm_s + first_s, 1)})
            first_s = 0.0
        eng.close()
        if args.device == "cuda":
            torch.cuda.empty_cache()


def serve(args: argparse.Namespace) -> None:
    """One real pod (``python -m trt_serving``, cuda backend) driven over HTTP, JPEG in, codes out."""
    import bench_hasher_http as http_bench
    import httpx

    from trt_serving.artifacts import BuildRequest, build_artifact

    artifact = build_artifact(BuildRequest(model=args.model, version=VERSION, backend="cuda",
                                           precision=args.precision, cache_dir=args.cache_dir, threads=args.threads))
    images = http_bench._images(64, grayscale=False, size=300)  # RGB JPEG q90 uploads
    batch_of = {c: min(c, args.max_batch_size) for c in args.concurrency}
    engine_rates = {c: http_bench._engine_rates(artifact, batch_of[c], args.threads, args.seconds / 2, images)
                    for c in args.concurrency}
    port = http_bench._free_port()
    env = {**os.environ, "SERVESTACK_HASHER_MODEL": args.model, "SERVESTACK_HASHER_VERSION": VERSION,
           "SERVESTACK_HASHER_PORT": str(port), "SERVESTACK_HASHER_CACHE_DIR": str(args.cache_dir),
           "SERVESTACK_HASHER_BACKEND": "cuda", "SERVESTACK_HASHER_PRECISION": args.precision,
           "SERVESTACK_HASHER_FALLBACKS": "",  # a pod that cannot load cuda must not quietly serve a CPU engine
           "SERVESTACK_HASHER_ARTIFACT_DIR": str(artifact), "SERVESTACK_HASHER_THREADS": str(args.threads),
           "SERVESTACK_HASHER_DECODE_WORKERS": str(args.decode_workers),
           "SERVESTACK_HASHER_MAX_BATCH_SIZE": str(args.max_batch_size),
           "SERVESTACK_HASHER_MAX_QUEUE_DELAY_US": str(args.max_queue_delay_us),
           "SERVESTACK_HASHER_MAX_QUEUE_SIZE": str(max(256, 4 * max(args.concurrency))),
           "SERVESTACK_HASHER_LOG_LEVEL": "warning", "OTEL_SDK_DISABLED": "true",
           "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    log = args.rows.with_name("pod.log")
    with log.open("ab") as pod_out:
        pod = subprocess.Popen([sys.executable, "-m", "trt_serving"], env=env, stdout=pod_out,
                                          stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.ready_timeout_s
        while not http_bench._ready(url):
            if time.monotonic() > deadline or pod.poll() is not None:
                raise SystemExit(f"the pod did not become ready; its log: {log}")
            time.sleep(0.2)
        probe = httpx.post(f"{url}/v1/hash", json={"images": [base64.b64encode(images[0]).decode()]}, timeout=30)
        probe.raise_for_status()
        served_by = probe.json()["engine"]
        if served_by["backend"] != "cuda":
            raise SystemExit(f"the pod serves {served_by}, not the cuda backend")
        for c in args.concurrency:
            rate, p50, errors, client_cpu = http_bench._drive("raw", port, images, c, args.seconds)
            eng, dec = engine_rates[c]
            _emit(args.rows, {"stage": "serve", "model": args.model, "precision": args.precision,
                              "concurrency": c, "img_s": round(rate, 1), "p50_ms": round(p50, 2), "errors": errors,
                              "client_cpu": round(client_cpu, 2), "engine_img_s": round(eng, 1),
                              "engine_batch": batch_of[c], "decode_engine_img_s": round(dec, 1),
                              "decode_workers": args.decode_workers})
    finally:
        pod.terminate()
        pod.wait(timeout=30)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=Path, required=True, help="JSON lines file the rows are appended to")
    p.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    p.add_argument("--threads", type=int, default=4, help="CPU threads (references, engine builds)")
    sub = p.add_subparsers(dest="stage", required=True)
    w = sub.add_parser("weights")
    w.add_argument("--models", nargs="+", default=["face", "fingerprint"])
    e = sub.add_parser("engine")
    e.add_argument("--model", required=True, choices=["face", "fingerprint"])
    e.add_argument("--mode", default="graphs", choices=["graphs", "inductor", "eager"])
    e.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    e.add_argument("--batches", nargs="+", type=int, default=[1, 32, 128, 256])
    e.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell")
    e.add_argument("--budget-s", type=float, default=60.0, help="no new cell starts after this")
    e.add_argument("--device", default="cuda")
    e.add_argument("--heldout", type=int, default=64, help="held-out images for the bit agreement (at most 64)")
    e.add_argument("--input-size", type=int, default=None,
                   help="side of the timed inputs (default: the model's; the dry run's CPU takes 32)")
    s = sub.add_parser("serve")
    s.add_argument("--model", default="face", choices=["face", "fingerprint"])
    s.add_argument("--precision", default="fp16")
    s.add_argument("--concurrency", nargs="+", type=int, default=[64])
    s.add_argument("--seconds", type=float, default=8.0)
    s.add_argument("--max-batch-size", type=int, default=64)
    s.add_argument("--max-queue-delay-us", type=int, default=2000)
    s.add_argument("--decode-workers", type=int, default=max(1, (os.cpu_count() or 2) - 3))
    s.add_argument("--ready-timeout-s", type=float, default=180.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    {"weights": weights, "engine": engine, "serve": serve}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
