"""One hasher pod, three ways in: the Open Inference Protocol over gRPC, the same protocol over HTTP
(binary tensor extension), and ``POST /v1/hash`` (JSON, base64); img/s at concurrency 64.

Starts one real pod (``python -m trt_serving``) with both servers on free 127.0.0.1 ports and drives
it, one image per request, from a **separate load-generator process** per measurement. Every client
sends request bytes encoded once up front and does not decode answers beyond their status, so the
comparison is of what the server pays per protocol:
- gRPC: ``grpc.aio`` on one HTTP/2 channel, ``ModelInfer`` with the image in ``raw_input_contents``
  (what ``tritonclient.grpc`` sends), asking for ``codes`` only; messages passed as bytes.
- OIP HTTP: the raw keep-alive HTTP/1.1 client of bench_hasher_http.py, one connection per user,
  ``/v2/models/{model}/infer`` with the image as binary tensor data, ``codes`` back as binary.
- /v1/hash: the same raw client, JSON with the image in base64 (the router's protocol).
Protocols alternate within each round; the table gives the median of the rounds.

    .venv/bin/python bench/bench_hasher_grpc.py --model fingerprint --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing.connection
import os
import shlex
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_hasher_http import _free_port, _images, _raw_client, in_process, wait_ready  # noqa: E402

PROTOCOLS = ("grpc", "oip-http", "v1-hash")
REPORTS_MEDIANS = True  # medians of its own rounds (bench/README.md)


def _grpc_requests(model: str, version: str, images: list[bytes]) -> list[bytes]:
    from trt_serving import oip_grpc as pb

    out = []
    for img in images:
        req = pb.ModelInferRequest(model_name=model, model_version=version,
                                   raw_input_contents=[struct.pack("<I", len(img)) + img])
        req.inputs.add(name="images", datatype="BYTES", shape=[1])
        req.outputs.add(name="codes")
        out.append(req.SerializeToString())
    return out


def _http_requests(protocol: str, model: str, images: list[bytes]) -> list[bytes]:
    out = []
    for img in images:
        if protocol == "v1-hash":
            body = json.dumps({"images": [base64.b64encode(img).decode()]}).encode()
            head = b"POST /v1/hash HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        else:
            tensor = struct.pack("<I", len(img)) + img
            header = json.dumps({
                "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": len(tensor)}}],
                "outputs": [{"name": "codes", "parameters": {"binary_data": True}}],
            }).encode()
            body = header + tensor
            head = (b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: %d\r\n"
                    % (model.encode(), len(header)))
        out.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return out


async def _grpc_client(target: str, requests: list[bytes], concurrency: int,
                       seconds: float) -> tuple[list[float], int]:
    import grpc

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out

        async def user(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await infer(requests[i % len(requests)], timeout=60)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += concurrency

        await asyncio.gather(*(user(k) for k in range(concurrency)))
    return latencies, errors


def _load_generator(conn: multiprocessing.connection.Connection, protocol: str, ports: tuple[int, int],
                    model: str, version: str, images: list[bytes], concurrency: int, seconds: float) -> None:
    """Runs in its own process: warm up 1 s, then drive for ``seconds``; sends back the stats."""
    http_port, grpc_port = ports
    if protocol == "grpc":
        requests = _grpc_requests(model, version, images)

        def drive(secs: float) -> tuple[list[float], int]:
            return asyncio.run(_grpc_client(f"127.0.0.1:{grpc_port}", requests, concurrency, secs))
    else:
        raw = _http_requests(protocol, model, images)

        def drive(secs: float) -> tuple[list[float], int]:
            return asyncio.run(_raw_client("127.0.0.1", http_port, raw, concurrency, secs))

    drive(1.0)
    cpu, started = time.process_time(), time.perf_counter()
    latencies, errors = drive(seconds)
    elapsed = time.perf_counter() - started
    conn.send((len(latencies) / elapsed, float(np.percentile(latencies, 50)) * 1000 if latencies else float("nan"),
               errors, (time.process_time() - cpu) / elapsed))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fingerprint", choices=["face", "fingerprint"])
    p.add_argument("--version", default="1")
    p.add_argument("--backend", default="openvino")
    p.add_argument("--precision", default="int8")
    p.add_argument("--concurrency", nargs="+", type=int, default=[64])
    p.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3, help="each protocol once per round; medians reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=300, help="side of the uploaded images, pixels")
    p.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    p.add_argument("--quick", action="store_true", help="1 round of 3 s (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 3.0

    from trt_serving.artifacts import BuildRequest, build_artifact

    artifact = build_artifact(BuildRequest(model=args.model, version=args.version, backend=args.backend,
                                           precision=args.precision, cache_dir=args.cache_dir, threads=args.threads))
    images = _images(64, grayscale=args.model == "fingerprint", size=args.image_size)
    ports = (_free_port(), _free_port())
    env = {**os.environ, "SERVESTACK_HASHER_MODEL": args.model, "SERVESTACK_HASHER_VERSION": args.version,
           "SERVESTACK_HASHER_PORT": str(ports[0]), "SERVESTACK_HASHER_GRPC_PORT": str(ports[1]),
           "SERVESTACK_HASHER_CACHE_DIR": str(args.cache_dir), "SERVESTACK_HASHER_THREADS": str(args.threads),
           "SERVESTACK_HASHER_ARTIFACT_DIR": str(artifact), "SERVESTACK_HASHER_LOG_LEVEL": "warning",
           "OTEL_SDK_DISABLED": "true", "OMP_NUM_THREADS": str(args.threads)}
    pod = subprocess.Popen([sys.executable, "-m", "trt_serving"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    results: dict[tuple[int, str], list[tuple[float, float, int, float]]] = {}
    try:
        wait_ready(pod, f"http://127.0.0.1:{ports[0]}")
        for rnd in range(args.rounds):
            for c in args.concurrency:
                order = PROTOCOLS if rnd % 2 == 0 else PROTOCOLS[::-1]
                for protocol in order:
                    row = in_process(_load_generator, (protocol, ports, args.model, args.version, images, c,
                                                        args.seconds), args.seconds)
                    results.setdefault((c, protocol), []).append(row)
                    print(f"round {rnd + 1} concurrency {c} {protocol}: {row[0]:.1f} img/s, p50 {row[1]:.1f} ms, "
                          f"{row[2]} errors", file=sys.stderr)
    finally:
        pod.terminate()
        pod.wait(timeout=30)

    kind = "8-bit grayscale PNG" if args.model == "fingerprint" else "RGB JPEG q90"
    print(f"\ngRPC vs HTTP, one pod: {args.model} v{args.version}, {args.backend} {args.precision}, "
          f"{args.threads} engine threads; {args.image_size}x{args.image_size} {kind}, one per request; "
          f"median of {args.rounds} rounds of {args.seconds:g} s; clients in a separate process\n")
    print("| concurrency | protocol | img/s | p50 ms | errors | client CPU | vs OIP HTTP |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    labels = {"grpc": "OIP gRPC (ModelInfer, raw contents)", "oip-http": "OIP HTTP (binary tensor data)",
              "v1-hash": "/v1/hash (JSON, base64)"}
    for c in args.concurrency:
        medians = {proto: [statistics.median(col) for col in zip(*results[(c, proto)], strict=True)]
                   for proto in PROTOCOLS}
        for proto in PROTOCOLS:
            rate, p50, errors, client_cpu = medians[proto]
            print(f"| {c} | {labels[proto]} | {rate:.1f} | {p50:.1f} | {errors:.0f} | {client_cpu:.2f} "
                  f"| {rate / medians['oip-http'][0]:.2f}x |")
    print("\nCommand: `.venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv) + "`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
