"""Router-added latency, the proxied requests/s and the CPU per request of one router process.

Starts a trivial upstream hasher (raw ASGI, constant-time answer) and a real router process
(`python -m router`) in front of it; with ``--baseline-src DIR`` also a router from another tree
(e.g. a worktree of the previous commit) against the same upstream, so that both are measured
side by side in one run, under the same machine load:

1. latency: the same POST /v1/hash sent directly to the upstream and through each router,
   interleaved, paced at each moderate rate given; p50/p99 of each and the difference;
2. throughput: each router alone at high concurrency for a fixed time, in alternating rounds
   (median of the rounds), with the router process's CPU time per request (from /proc).

Usage:
    .venv/bin/python bench/bench_router.py [--requests 2000] [--concurrency 4] [--rate 200 600]
        [--max-concurrency 32] [--seconds 10] [--rounds 3] [--image-bytes 2048] [--baseline-src DIR]

The client (bench/rawhttp.py: prebuilt request bytes over keep-alive connections) runs in this
process and costs a few per cent of a core; httpx, used before, topped out near 400 requests/s
on one core here and measured itself rather than the router. Client, router and upstream still
share the machine's cores, so the added latency is an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import rawhttp  # bench/: a load client cheaper than the servers it measures
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stand-in servers' ASGI helpers live with the tests
from tests.support.asgi import read_body, respond  # noqa: E402

ENGINE = {"model": "face", "version": "1", "backend": "fake", "precision": "fp32"}
KEY = "sk-bench"


async def upstream_app(scope, receive, send):
    """The trivial upstream: answers /v1/hash with a code derived from the body, and readiness."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["path"] == "/v1/hash":
        n = len(json.loads(body)["images"])
        payload = json.dumps({"engine": ENGINE, "codes": [hashlib.blake2b(body, digest_size=16).hexdigest()] * n})
        data, status = payload.encode(), 200
    else:
        data, status = b"{}", 200
    await respond(send, status, data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _requests(direct: str, router: str, image_bytes: int = 2048) -> tuple[bytes, bytes]:
    image = base64.b64encode(os.urandom(image_bytes)).decode()
    direct_req = rawhttp.post(urlsplit(direct).netloc, "/v1/hash", json.dumps({"images": [image]}).encode())
    router_req = rawhttp.post(urlsplit(router).netloc, "/v1/hash",
                              json.dumps({"modality": "face", "images": [image]}).encode(),
                              {"Authorization": f"Bearer {KEY}"})
    return direct_req, router_req


async def _open(url: str) -> rawhttp.RawConnection:
    parts = urlsplit(url)
    return await rawhttp.RawConnection.open(parts.hostname or "127.0.0.1", parts.port or 80)


async def latency_run(direct: str, routers: dict[str, str], n: int, concurrency: int, rate: float,
                      image_bytes: int) -> dict[str, list[float]]:
    """``concurrency`` users, each sending the same request direct and through every router in turn.

    Paced (open loop) at ``rate`` requests/s per path in all: moderate load means a known share of
    the router's capacity, not as fast as the client can go (that would measure a saturated router).
    Returns the latencies (s) per path: "direct" and each router's name.
    """
    interval = concurrency / rate
    paths = {"direct": (direct, _requests(direct, direct, image_bytes)[0])}
    for name, url in routers.items():
        paths[name] = (url, _requests(direct, url, image_bytes)[1])
    lat: dict[str, list[float]] = {name: [] for name in paths}

    async def user(requests: int, record: bool) -> None:
        conns = {name: await _open(url) for name, (url, _) in paths.items()}
        next_at = time.perf_counter() + interval * random.random()  # users spread over one interval
        try:
            for _ in range(requests):
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
                # Interleave: the paths see the same machine load at the same moments.
                for name, (_, req) in paths.items():
                    t0 = time.perf_counter()
                    status, _, body = await conns[name].request(req)
                    if status != 200:
                        raise RuntimeError(f"{name} {status}: {body[:200]!r}")
                    if record:
                        lat[name].append(time.perf_counter() - t0)
        finally:
            for conn in conns.values():
                conn.close()

    await asyncio.gather(*(user(50 // concurrency + 1, False) for _ in range(concurrency)))  # warm-up
    await asyncio.gather(*(user(n // concurrency, True) for _ in range(concurrency)))
    return lat


def cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput_run(router: str, pid: int, concurrency: int, seconds: float,
                         image_bytes: int) -> tuple[float, int, float]:
    """(proxied requests/s, errors, router CPU microseconds per request)."""
    _, router_req = _requests(router, router, image_bytes)
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        nonlocal done, errors
        conn = await _open(router)
        try:
            while time.perf_counter() < deadline:
                status, _, _ = await conn.request(router_req)
                if status == 200:
                    done += 1
                else:
                    errors += 1
        finally:
            conn.close()

    start, cpu0 = time.perf_counter(), cpu_s(pid)
    await asyncio.gather(*(user() for _ in range(concurrency)))
    cpu = cpu_s(pid) - cpu0
    return done / (time.perf_counter() - start), errors, cpu / max(1, done + errors) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per path in the latency run")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per path in the latency run")
    ap.add_argument("--rate", type=float, nargs="+", default=[200.0, 600.0],
                    help="requests/s per path of each latency run (moderate loads: ~1/10 and ~1/3 of one router "
                         "process's capacity here)")
    ap.add_argument("--max-concurrency", type=int, default=32, help="concurrency of the throughput run")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds per router (median reported)")
    ap.add_argument("--image-bytes", type=int, default=2048, help="size of the (random) image sent")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="a source tree (e.g. `git worktree add /tmp/base <commit>`) whose router runs side by "
                         "side with this one's, against the same upstream, in the same run")
    ap.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream is not None:
        import uvicorn

        uvicorn.run(upstream_app, host="127.0.0.1", port=args.serve_upstream, log_level="warning", access_log=False)
        return 0

    from router.auth import hash_key

    here = Path(__file__).resolve().parent.parent
    trees = {"this tree": here}
    if args.baseline_src is not None:
        trees["baseline"] = args.baseline_src.resolve()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        tmpdir = Path(tmp)
        up_port = free_port()
        direct = f"http://127.0.0.1:{up_port}"
        (tmpdir / "policy.yaml").write_text(yaml.safe_dump({
            "backends": {"hasher-face-v1": {"endpoints": [direct]}},
            "routes": {"face": {"arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": 100}]}},
        }))
        (tmpdir / "keys.yaml").write_text(yaml.safe_dump({"keys": [
            {"name": "bench", "sha256": hash_key(KEY), "scopes": ["client"], "rate_per_s": 1e9, "burst": 1e9}]}))
        routers: dict[str, str] = {}
        pids: dict[str, int] = {}
        try:
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port)]))
            wait_ready(f"{direct}/v2/health/ready", procs[-1])
            for i, (name, tree) in enumerate(trees.items()):
                port = free_port()
                env = {**os.environ, "OTEL_SDK_DISABLED": "true", "SERVESTACK_ROUTER_PORT": str(port),
                       "PYTHONPATH": str(tree),
                       "SERVESTACK_ROUTER_POLICY_PATH": str(tmpdir / "policy.yaml"),
                       "SERVESTACK_ROUTER_KEYS_FILE": str(tmpdir / "keys.yaml"),
                       "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{tmpdir / f'audit{i}.db'}",
                       "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING"}
                procs.append(subprocess.Popen([sys.executable, "-m", "router"], env=env, cwd=tree))
                routers[name], pids[name] = f"http://127.0.0.1:{port}", procs[-1].pid
                wait_ready(f"{routers[name]}/readyz", procs[-1])
            latencies = {rate: asyncio.run(latency_run(direct, routers, args.requests, args.concurrency, rate,
                                                       args.image_bytes)) for rate in args.rate}
            rounds: dict[str, list[tuple[float, int, float]]] = {name: [] for name in routers}
            for _ in range(args.rounds):  # alternating: a slow moment of the machine hits both
                for name, url in routers.items():
                    rounds[name].append(asyncio.run(throughput_run(url, pids[name], args.max_concurrency,
                                                                   args.seconds, args.image_bytes)))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    ms = 1000.0
    rates = " ".join(f"{r:g}" for r in args.rate)
    baseline = f" --baseline-src {args.baseline_src}" if args.baseline_src else ""
    print(f"Command: .venv/bin/python bench/bench_router.py --requests {args.requests} --concurrency "
          f"{args.concurrency} --rate {rates} --max-concurrency {args.max_concurrency} --seconds {args.seconds:g} "
          f"--rounds {args.rounds} --image-bytes {args.image_bytes}{baseline}")
    for rate, lat in latencies.items():
        d50, d99 = pct(lat["direct"], 0.5) * ms, pct(lat["direct"], 0.99) * ms
        print()
        print(f"| path ({rate:g} req/s each over {args.concurrency} connections, {args.requests} req each) "
              "| p50 ms | p99 ms | added p50 ms | added p99 ms |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| direct to the upstream | {d50:.2f} | {d99:.2f} | | |")
        for name in routers:
            r50, r99 = pct(lat[name], 0.5) * ms, pct(lat[name], 0.99) * ms
            print(f"| through the router ({name}) | {r50:.2f} | {r99:.2f} | **{r50 - d50:.2f}** "
                  f"| **{r99 - d99:.2f}** |")
    print()
    print(f"| throughput (concurrency {args.max_concurrency}, {args.seconds:g} s, median of {args.rounds} rounds) "
          "| proxied requests/s | router CPU us/request | errors |")
    print("| --- | --- | --- | --- |")
    for name, runs in rounds.items():
        print(f"| one router process ({name}) | {statistics.median([r[0] for r in runs]):.0f} | "
              f"{statistics.median([r[2] for r in runs]):.0f} | {sum(r[1] for r in runs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
