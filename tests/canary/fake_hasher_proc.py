"""A hasher pod stand-in as a real process, with fault injection (tests of the canary loop).

    python tests/canary/fake_hasher_proc.py --port P --version 2 [--error-rate 0.5]
        [--delay-ms 300] [--flip-bits 3] [--precision int8]

Speaks the pod's wire format (trt_serving.schemas): POST /v1/hash, GET /v2/health/ready. Codes
are deterministic per (image, version) so verification of the same image accepts; --flip-bits
flips that many low bits (an engine of another precision, same weights). Real model pods live in
trt_serving; the canary tests only need a backend that fails or slows down on command.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from trt_serving.schemas import EngineInfo, HashRequest, HashResponse


def code_of(image: bytes, version: str, flip_bits: int) -> str:
    value = int.from_bytes(hashlib.blake2b(version.encode() + b"|" + image, digest_size=16).digest(), "big")
    return format(value ^ ((1 << flip_bits) - 1), "032x")


def build(args: argparse.Namespace) -> FastAPI:
    app = FastAPI()
    rng = random.Random(args.seed)
    engine = EngineInfo(model=args.model, version=args.version, backend="fake", precision=args.precision)

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.post("/v1/hash", response_model=None)
    async def hash_images(body: HashRequest) -> JSONResponse | HashResponse:
        if args.delay_ms:
            await asyncio.sleep(args.delay_ms / 1000)
        if rng.random() < args.error_rate:
            return JSONResponse({"error": {"code": "injected", "message": "injected fault"}}, status_code=500)
        codes = [code_of(base64.b64decode(i), args.version, args.flip_bits) for i in body.images]
        return HashResponse(engine=engine, codes=codes)

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="face")
    p.add_argument("--version", default="1")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--flip-bits", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    uvicorn.run(build(args), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
