"""Engine-only throughput of the hasher: img/s per model x backend x precision x batch size.

Builds (or reuses) the artifacts under the cache, then times ``Engine.infer`` on generated inputs
for a fixed wall-clock budget per cell after a warm-up. Prints a Markdown table (with each
artifact's bit agreement vs torch fp32) and the exact command.

    .venv/bin/python bench/bench_engines.py --models face fingerprint --batches 1 8 32
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

DEFAULT_CELLS = ["torch:fp32", "torch:bf16", "onnxruntime:fp32", "onnxruntime:int8",
                 "openvino:fp32", "openvino:bf16", "openvino:int8"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["face", "fingerprint"], choices=["face", "fingerprint"])
    p.add_argument("--version", default="1")
    p.add_argument("--engines", nargs="+", default=DEFAULT_CELLS, help="backend:precision cells")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=3.0, help="timed budget per cell (after warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.WARNING)

    from trt_serving.artifacts import BuildRequest, build_artifact, load_artifact
    from trt_serving.model.hasher import default_card
    from trt_serving.model.synthetic import generated_inputs

    rows = []
    for model in args.models:
        pre = default_card(model, args.version).preprocessing
        inputs = generated_inputs(max(args.batches), 4242, pre)
        for cell in args.engines:
            backend, precision = cell.split(":")
            try:
                directory = build_artifact(BuildRequest(model=model, version=args.version, backend=backend,
                                                        precision=precision, cache_dir=args.cache_dir,
                                                        threads=args.threads, force=True))
                engine, manifest = load_artifact(directory, args.threads)
            except Exception as exc:  # report and go on: one unavailable backend must not stop the table
                print(f"skip {model} {cell}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            agreement = manifest["bit_agreement"]["value"]
            for batch in args.batches:
                x = inputs[:batch]
                engine.infer(x)  # warm-up (first-call allocation, oneDNN primitive creation)
                n, started = 0, time.perf_counter()
                while time.perf_counter() - started < args.seconds or n < 2:
                    engine.infer(x)
                    n += 1
                rate = n * batch / (time.perf_counter() - started)
                rows.append((model, backend, precision, batch, rate, agreement))
                print(f"{model} {backend} {precision} batch {batch}: {rate:.1f} img/s", file=sys.stderr)
            engine.close()

    print(f"\nEngine-only hasher throughput, {args.threads} threads\n")
    print("| model | backend | precision | batch | img/s | bit agreement vs fp32 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for model, backend, precision, batch, rate, agreement in rows:
        print(f"| {model} | {backend} | {precision} | {batch} | {rate:.1f} | {agreement:.4f} |")
    print("\nCommand: `.venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv) + "`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
