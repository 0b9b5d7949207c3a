"""``servestack build``: build a hasher engine artifact (engine + manifest with sha256s, calibration
description and bit agreement with fp32 on held-out images); refused under the floor unless forced."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

BACKENDS = ("tensorrt", "cuda", "openvino", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build", help="build a hasher engine artifact",
                              description=__doc__)
    p.add_argument("--model", choices=["face", "fingerprint"], required=True)
    p.add_argument("--version", required=True, help='model version, e.g. "1" or "2"')
    p.add_argument("--precision", choices=PRECISIONS, required=True)
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    p.add_argument("--out", type=Path, help="artifact directory (default: under the cache)")
    p.add_argument("--weights", type=Path, help="checkpoint in the documented format (default: seeded weights)")
    p.add_argument("--calib-dir", type=Path, help="directory of representative images for INT8 calibration "
                                                  "(default: a generated, varied set)")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--floor", type=float, default=0.97, help="minimum bit agreement with fp32 (default 0.97)")
    p.add_argument("--force", action="store_true", help="keep an artifact under the floor")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the artifact exists")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from trt_serving.artifacts import AgreementTooLow, BuildRequest, build_artifact, read_manifest
    from trt_serving.engines.base import EngineUnavailable

    req = BuildRequest(model=args.model, version=args.version, backend=args.backend, precision=args.precision,
                       cache_dir=args.cache_dir, out_dir=args.out, weights=args.weights, calib_dir=args.calib_dir,
                       calib_images=args.calib_images, floor=args.floor, force=args.force, threads=args.threads,
                       rebuild=args.rebuild)
    try:
        directory = build_artifact(req)
    except AgreementTooLow as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except EngineUnavailable as exc:
        print(f"backend unavailable: {exc}", file=sys.stderr)
        return 2
    manifest = read_manifest(directory)
    summary = {k: manifest[k] for k in ("model", "version", "backend", "precision", "bit_agreement")}
    print(json.dumps(summary, indent=2))
    print(directory.resolve())
    return 0
