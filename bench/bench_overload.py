"""Overload: the local stack's capacity C, then 2C and 4C offered open-loop, admission control on and off.

Starts `servestack up --no-explainer` (real hasher pods, CPU engines) and two extra router
processes in front of its pods, with the stack's policy and keys: one with admission control
(the default settings), one with ``SERVESTACK_ROUTER_ADMISSION_LIMIT_PER_REPLICA=0``. Both keep
the request deadline (2 s by default). The verify mix: face only, and face + fingerprint in
30 % of requests, over enrolled subjects.

1. Capacity C: open-loop (Poisson arrivals) verify rates, stepped up, on the router without
   admission control; C is the highest rate whose successes' p99 is at most 500 ms with at least
   99 % of requests served.
2. 2C and 4C, each on both routers, interleaved: goodput (successes/s), p50/p99 of successes,
   refusals (503 ``overloaded``, 429 ``rate_limited``: answered at once by design) and the slowest
   one, whether every refusal carried Retry-After, other errors by status and code (a 503
   ``upstream_unavailable`` after tries timed out is a failure, not a refusal), client timeouts
   (the client gives up after 3 s).

Usage:
    .venv/bin/python bench/bench_overload.py [--quick] [--seconds 8] [--start-rate 8]

Client, router and pods share the machine's cores: the numbers are of this machine as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import bench_router  # bench/: its router-process helpers
import httpx
import rawhttp  # bench/: a load client cheaper than the servers it measures
from bench_router import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from servestack.background import start_stack, stop_stack  # noqa: E402
from servestack.samples import write_samples  # noqa: E402

# Run once by bench/run_all.py: a whole-stack run of minutes on a shared machine; each table row is
# one measurement, and the capacity search steps are the only repetition.
REPORTS_MEDIANS = True
P99_TARGET_S = 0.5
CLIENT_TIMEOUT_S = 3.0
TWO_MODALITIES = 0.3


def pct(values: list[float], q: float) -> float:
    return bench_router.pct(values, q) if values else float("nan")


def start_router(state_dir: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full = {**os.environ, "OTEL_SDK_DISABLED": "true", "SERVESTACK_ROUTER_PORT": str(port),
            "SERVESTACK_ROUTER_POLICY_PATH": str(state_dir / "policy.yaml"),
            "SERVESTACK_ROUTER_KEYS_FILE": str(state_dir / "keys.yaml"),
            "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{state_dir / f'audit-{name}.db'}",
            "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING", **env}
    log = open(state_dir / f"bench-router-{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "router"], env=full, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    bench_router.wait_ready(f"{url}/readyz", proc, timeout_s=120)
    return proc, url


@dataclass
class Run:
    offered: float
    seconds: float
    latencies_ok: list[float] = field(default_factory=list)
    refusals: list[float] = field(default_factory=list)
    refusals_without_retry_after: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "status code" -> count; "conn" without an answer
    timeouts: int = 0
    sent: int = 0

    @property
    def goodput(self) -> float:
        return len(self.latencies_ok) / self.seconds


REFUSALS = {"overloaded", "rate_limited"}  # answered at once, by design: the others are failures


def _code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


class Client:
    """Open loop over keep-alive connections: a free connection per request, a new one when none is free."""

    def __init__(self, url: str, key: str) -> None:
        self.host = urlsplit(url).hostname or "127.0.0.1"
        self.port = urlsplit(url).port or 80
        self.netloc = urlsplit(url).netloc
        self.key = key
        self.free: list[rawhttp.RawConnection] = []

    def request(self, subject: str, images: dict[str, str]) -> bytes:
        body = json.dumps({"subject_id": subject, **images}).encode()
        return rawhttp.post(self.netloc, "/v1/verify", body, {"Authorization": f"Bearer {self.key}"})

    async def _request(self, data: bytes) -> tuple[rawhttp.RawConnection, int, dict[bytes, bytes], bytes]:
        """Send on a pooled connection, or a new one when the pooled one was closed while idle."""
        while self.free:
            conn = self.free.pop()
            try:
                return (conn, *await conn.request(data))
            except (OSError, asyncio.IncompleteReadError):
                conn.close()  # the server closed it after its keep-alive timeout: not an error of the request
            except BaseException:  # a client timeout cancels us: the connection's state is unknown
                conn.close()
                raise
        conn = await rawhttp.RawConnection.open(self.host, self.port)
        try:
            return (conn, *await conn.request(data))
        except BaseException:
            conn.close()
            raise

    async def send(self, data: bytes, run: Run) -> None:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                conn, status, headers, body = await self._request(data)
        except TimeoutError:
            run.timeouts += 1
            return
        except (OSError, asyncio.IncompleteReadError):
            run.errors["conn"] = run.errors.get("conn", 0) + 1
            return
        elapsed = time.perf_counter() - t0
        self.free.append(conn)
        if status == 200:
            run.latencies_ok.append(elapsed)
        elif status in (429, 503) and _code(body) in REFUSALS:
            run.refusals.append(elapsed)
            if b"retry-after" not in headers:
                run.refusals_without_retry_after += 1
        else:
            key = f"{status} {_code(body)}"
            if key not in run.errors:
                print(f"first {key}: {body[:300]!r}", file=sys.stderr)
            run.errors[key] = run.errors.get(key, 0) + 1

    def close(self) -> None:
        for conn in self.free:
            conn.close()
        self.free.clear()


async def open_loop(client: Client, rate: float, seconds: float, requests: list[bytes], seed: int) -> Run:
    """Poisson arrivals at ``rate``/s for ``seconds``: each request sent on time, whatever is in flight."""
    rng = random.Random(seed)
    run = Run(offered=rate, seconds=seconds)
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    next_at = start
    while next_at - start < seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        task = asyncio.create_task(client.send(requests[run.sent % len(requests)], run))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        run.sent += 1
        next_at += rng.expovariate(rate)
    if tasks:
        await asyncio.gather(*tasks)
    return run


def enrol(url: str, key: str, subjects: list[str], images: dict[str, str]) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        for s in subjects:
            r = http.post("/v1/enroll", json={"subject_id": s, **images})
            if r.status_code != 200:
                raise RuntimeError(f"enrol {s}: {r.status_code} {r.text[:300]}")


def verify_requests(client: Client, subjects: list[str], images: dict[str, str], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        both = rng.random() < TWO_MODALITIES
        out.append(client.request(subjects[i % len(subjects)],
                                  images if both else {"face": images["face"]}))
    return out


def row(label: str, run: Run, capacity: float, p99_at_c: float) -> str:
    ok = run.latencies_ok
    refused_max = max(run.refusals) * 1000 if run.refusals else 0.0
    errors = sum(run.errors.values())
    good = (run.goodput >= 0.9 * capacity and pct(ok, 0.99) <= 2 * p99_at_c and refused_max <= 50
            and run.refusals_without_retry_after == 0 and run.timeouts == 0)
    err_text = ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())) or "0"
    retry_after = "-" if not run.refusals else ("yes" if run.refusals_without_retry_after == 0 else "no")
    return (f"| {label} | {run.offered:.0f} | {run.goodput:.1f} ({run.goodput / capacity:.2f} C) | "
            f"{pct(ok, 0.5) * 1000:.0f} | {pct(ok, 0.99) * 1000:.0f} | {len(run.refusals)} | {refused_max:.0f} | "
            f"{retry_after} | {err_text if errors else 0} | {run.timeouts} | {'**met**' if good else 'missed'} |")


async def bench(args: argparse.Namespace) -> int:
    cache = REPO / ".servestack" / "cache"
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        state = Path(tmp) / "stack"
        print("starting servestack up --no-explainer ...", file=sys.stderr)
        stack_proc, info = start_stack(state, "--no-explainer", cache_dir=cache, timeout_s=1800, cwd=REPO)
        procs: list[subprocess.Popen] = []
        try:
            on_proc, on_url = start_router(state, "on", {})
            off_proc, off_url = start_router(state, "off", {"SERVESTACK_ROUTER_ADMISSION_LIMIT_PER_REPLICA": "0"})
            procs += [on_proc, off_proc]
            samples = write_samples(Path(tmp) / "samples")
            images = {m: base64.b64encode(samples[m].read_bytes()).decode() for m in ("face", "fingerprint")}
            subjects = [f"bench-{i}" for i in range(20)]
            for url in (on_url, off_url):
                enrol(url, info.api_key, subjects, images)
            on, off = Client(on_url, info.api_key), Client(off_url, info.api_key)
            reqs_on = verify_requests(on, subjects, images, 4000, 1)
            reqs_off = verify_requests(off, subjects, images, 4000, 1)
            await open_loop(off, args.start_rate, 2, reqs_off, 0)  # warm-up
            # 1. capacity, on the router without admission control (the stack's own limit)
            rate, capacity, p99_at_c, steps = args.start_rate, 0.0, 0.0, []
            while rate <= args.max_rate:
                run = await open_loop(off, rate, args.seconds, reqs_off, int(rate))
                served = len(run.latencies_ok) / max(1, run.sent)
                p99 = pct(run.latencies_ok, 0.99)
                steps.append((rate, run.goodput, p99, served))
                print(f"rate {rate:.1f}/s: goodput {run.goodput:.1f}/s p99 {p99 * 1000:.0f} ms served {served:.3f} "
                      f"refused {len(run.refusals)} errors {run.errors} timeouts {run.timeouts}", file=sys.stderr)
                if p99 > P99_TARGET_S or served < 0.99:
                    break
                capacity, p99_at_c = rate, p99
                rate *= args.step
                await asyncio.sleep(2)  # let queues drain between steps
            if capacity == 0:
                print("no rate met p99 <= 500 ms: lower --start-rate", file=sys.stderr)
                return 1
            # 2. overload, both routers, interleaved
            rows = []
            for factor in (2, 4):
                for label, client, reqs in (("on", on, reqs_on), ("off", off, reqs_off)):
                    await asyncio.sleep(3)
                    run = await open_loop(client, factor * capacity, args.seconds, reqs, factor)
                    rows.append(row(f"{factor}C, admission {label}", run, capacity, p99_at_c))
                    print(rows[-1], file=sys.stderr)
            on.close()
            off.close()
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            stop_stack(stack_proc)
    print("Capacity search (verify mix, open loop, router without admission control):\n")
    print("| offered req/s | goodput req/s | p99 of successes ms | served |")
    print("|---:|---:|---:|---:|")
    for rate, goodput, p99, served in steps:
        print(f"| {rate:.1f} | {goodput:.1f} | {p99 * 1000:.0f} | {served:.3f} |")
    print(f"\nC = {capacity:.1f} req/s (p99 {p99_at_c * 1000:.0f} ms). Overload, {args.seconds:g} s per row, "
          f"client timeout {CLIENT_TIMEOUT_S:g} s:\n")
    print("| run | offered req/s | goodput req/s | p50 ms | p99 ms | refused (overloaded, rate_limited) "
          "| slowest refusal ms | Retry-After on all | other errors | client timeouts | goals |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        print(r)
    print("\nGoals: goodput >= 0.9 C, p99 of successes <= 2x p99 at C, every refusal within 50 ms with "
          "Retry-After, no client timeouts.")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short steps (a smoke test)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each open-loop step")
    p.add_argument("--start-rate", type=float, default=8.0, help="first rate of the capacity search, req/s")
    p.add_argument("--step", type=float, default=1.25, help="rate multiplier between capacity steps")
    p.add_argument("--max-rate", type=float, default=400.0)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 3.0
        args.step = 1.5
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
