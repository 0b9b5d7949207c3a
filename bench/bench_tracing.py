"""Router throughput with tracing off, at 100% sampling and at a 10% ratio, in one run.

Each mode runs the real router (`python -m router`, uvicorn) as its own process on 127.0.0.1
with the OTEL_* variables of that mode; spans go to a real OTLP/HTTP receiver (oteltap) in this
process. Two workloads, each with its own table:

* audit-404 (the worst case): authenticated GET /v1/audit/<unknown id> (TraceMiddleware server
  span, the auth span, metrics middleware, an SQLite lookup, a 404 through the error handler):
  the router's cheapest traced request, where tracing is the largest share of the work.
* verify: POST /v1/verify (face) of an enrolled subject through the router's whole flow (auth,
  policy decision, balancer pick, upstream call, Hamming distance, audit write, 10% shadow
  copies) against a fast fake hasher (bench_router.py's constant-time raw-ASGI upstream), so
  that the router, not inference, is the bottleneck: the realistic request, ~6 spans each.

Modes and workloads run interleaved (round by round: A B C for each workload) so that drift on a
shared machine hits all of them.

While the router cannot start (its pod clients land in parallel), ``--target auto`` falls back to
a minimal app with the same tracing per request (TraceMiddleware, an auth span, JSON 404); the
output says which target ran.

    .venv/bin/python bench/bench_tracing.py --duration-s 6 --rounds 4 --concurrency 32 [--workload both]

The previous commit side by side, interleaved in the same run (each mode runs once on this tree
and once on DIR's router; "base: <mode>" rows; make DIR with
``git worktree add /tmp/base-main <commit> --detach``):

    .venv/bin/python bench/bench_tracing.py --workload verify --baseline-src /tmp/base-main

An A/B of a router setting, interleaved in the same run (e.g. the start-up gc freeze):

    .venv/bin/python bench/bench_tracing.py --workload verify --modes off ratio=1.0 \\
        --variant-env SERVESTACK_ROUTER_GC_FREEZE=false

Modes:
  off        OTEL_SDK_DISABLED=true: the SDK hands out a no-op tracer (no spans, zero trace ids)
  ratio=1.0  every trace exported over OTLP/HTTP (also the default: OTEL_TRACES_SAMPLER_ARG unset)
  ratio=1.0, stock SDK   the same with the SDK's own tracer and the OTLP exporter's own encoding
             (SERVESTACK_TRACER=sdk, SERVESTACK_OTLP_ENCODER=official): what tracing.lean and
             tracing.otlp_encode save
  ratio=0.1  parent-based 10%, the ratio suggested for production
Goal (issue 6): <= 10% throughput loss at 100% sampling against off.

"spans/request" is every span the receiver got from a router process divided by the requests it
served (warm-up, measured run and, for verify, the enrolments).

CPU per request is split by thread: the main thread runs the event loop (requests and making
spans); the other threads are the audit writer and readers (the same in every mode) and, when
exporting, the span export thread (encoding and POSTs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

REPORTS_MEDIANS = True  # median of its own interleaved rounds (bench/run_all.py runs it once)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the receiver helper lives with the tests (tests/observability)
sys.path.insert(0, str(REPO / "bench"))

from rawhttp import RawConnection  # noqa: E402

from servestack.local_config import write_keys, write_policy  # noqa: E402
from tests.observability.otlp_sink import OtlpSink  # noqa: E402
from tests.support.procs import free_port, wait_ready  # noqa: E402

WORKLOADS = ("audit-404", "verify")
VERIFY_SUBJECTS = 32  # sticky by subject: ~10% of them land on the v2 arm, as in production


BASE = "base: "  # the name prefix of modes run on --baseline-src


@dataclass
class Mode:
    name: str
    env: dict[str, str]
    src: Path = REPO  # the tree whose router runs


def modes(sink: OtlpSink) -> list[Mode]:
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    return [
        Mode("off", {"OTEL_SDK_DISABLED": "true"}),
        Mode("ratio=1.0", {**export, "OTEL_TRACES_SAMPLER_ARG": "1.0"}),
        Mode("ratio=1.0, stock SDK",
             {**export, "OTEL_TRACES_SAMPLER_ARG": "1.0", "SERVESTACK_TRACER": "sdk",
              "SERVESTACK_OTLP_ENCODER": "official"}),
        Mode("ratio=0.1", {**export, "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
    ]


def selected_modes(sink: OtlpSink, names: list[str], variant: dict[str, str],
                   baseline: Path | None = None) -> list[Mode]:
    """The modes named (all when none), each followed by its variant with ``variant``'s
    variables set on the router (an A/B of a router setting, interleaved in one run), and each
    of those by the same on ``baseline``'s router (the previous commit, side by side)."""
    chosen = [m for m in modes(sink) if not names or m.name in names]
    unknown = set(names) - {m.name for m in chosen}
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; modes: {[m.name for m in modes(sink)]}")
    if variant:
        label = " ".join(f"{k}={v}" for k, v in variant.items())
        chosen = [v for m in chosen for v in (m, Mode(f"{m.name} [{label}]", {**m.env, **variant}))]
    if baseline is None:
        return chosen
    return [v for m in chosen for v in (m, Mode(BASE + m.name, m.env, baseline))]


def router_importable() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import router.app"], cwd=REPO, capture_output=True)
    return probe.returncode == 0


def serve_minimal(port: int) -> None:
    """The stand-in target: TraceMiddleware + an auth span + a 404, like the router's audit lookup."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from tracing import TraceMiddleware, setup_telemetry, traced

    tel = setup_telemetry("servestack-router", "bench")
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/audit/{audit_id}")
    async def audit(audit_id: str) -> JSONResponse:
        with traced(tel.tracer, "auth", {"servestack.scope": "client"}):
            pass
        return JSONResponse({"error": {"code": "not_found", "message": audit_id}}, status_code=404)

    uvicorn.run(TraceMiddleware(app, tel.tracer), host="127.0.0.1", port=port, log_config=None, access_log=False)


def _keys_before_tenants(keys: Path) -> Path:
    """The keys file as a baseline router from before tenants and scopes ``pin``/``enroll:replace`` reads it."""
    doc = yaml.safe_load(keys.read_text())
    for entry in doc["keys"]:
        entry.pop("tenant", None)
        entry["scopes"] = [s for s in entry["scopes"] if s in ("client", "admin")]
    old = keys.with_name("keys-baseline.yaml")
    old.write_text(yaml.safe_dump(doc))
    return old


def start_router(
    state: Path, mode: Mode, minimal: bool, upstream: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The router of ``mode``; face and fingerprint hashers at ``upstream`` (None: URLs nothing serves)."""
    port = free_port()
    services = {n: upstream or f"http://127.0.0.1:{free_port()}"
                for n in ("hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1")}
    services["explainer"] = f"http://127.0.0.1:{free_port()}"  # never called by these workloads
    policy = write_policy(state, services)
    keys, _, _ = write_keys(state)
    if Path(mode.src).resolve() != REPO.resolve():
        keys = _keys_before_tenants(keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(mode.env)
    env["PYTHONPATH"] = str(mode.src)  # this tree's packages, or the baseline's
    env.update({
        "SERVESTACK_ROUTER_HOST": "127.0.0.1", "SERVESTACK_ROUTER_PORT": str(port),
        "SERVESTACK_ROUTER_POLICY_PATH": str(policy), "SERVESTACK_ROUTER_KEYS_FILE": str(keys),
        "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{state / f'audit-{port}.db'}",
        "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING",
    })
    log = (state / f"router-{port}.log").open("wb")
    argv = [sys.executable, __file__, "--serve-minimal", str(port)] if minimal else [sys.executable, "-m", "router"]
    if len(os.sched_getaffinity(0)) < (os.cpu_count() or 1):  # main() moved us off CPU 0: give it to the server
        argv = ["taskset", "-c", "0", *argv]
    proc = subprocess.Popen(argv, env=env, cwd=mode.src, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    # /readyz when pods serve (the health checker must have seen them); /healthz otherwise.
    probe = f"{url}/readyz" if upstream else f"{url}/healthz"
    try:
        wait_ready(probe, proc, log=Path(log.name), timeout_s=60, interval_s=0.2)
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    """bench_router.py's fake hasher (raw ASGI, constant-time answer) on this process's CPUs.

    It stands for hasher pods on other hosts: fast, so that the router is the bottleneck.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bench_router.py"), "--serve-upstream", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/v2/health/ready", proc, timeout_s=30, interval_s=0.2)
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise
    return proc, url


# Each workload: one request as bytes (a function of the connection's request counter), the status
# it must answer with.
Request = tuple[bytes, int]


def audit_request(host: str, api_key: str) -> Callable[[int], Request]:
    def build(_i: int) -> Request:
        return (f"GET /v1/audit/{secrets.token_hex(16)} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {api_key}\r\n\r\n".encode(), 404)

    return build


def verify_request(host: str, api_key: str, image_b64: str) -> Callable[[int], Request]:
    bodies = [json.dumps({"subject_id": f"bench-{n}", "face": image_b64}).encode() for n in range(VERIFY_SUBJECTS)]
    requests = [
        (f"POST /v1/verify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
         f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b, 200)
        for b in bodies
    ]

    def build(i: int) -> Request:
        return requests[i % len(requests)]

    return build


def enroll(url: str, api_key: str, image_b64: str) -> None:
    """Enrol the verify workload's subjects (each router process has its own audit database)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
        for n in range(VERIFY_SUBJECTS):
            client.post("/v1/enroll", json={"subject_id": f"bench-{n}", "face": image_b64}).raise_for_status()


async def _client(host: str, port: int, build: Callable[[int], Request], stop: float, latencies: list[float],
                  offset: int) -> None:
    """One keep-alive connection (bench/rawhttp.py) sending requests back to back."""
    conn = await RawConnection.open(host, port)
    i = offset
    try:
        while time.perf_counter() < stop:
            request, expected = build(i)
            i += 1
            t0 = time.perf_counter()
            status, headers, body = await conn.request(request)
            if status != expected or b"x-trace-id" not in headers:
                raise RuntimeError(f"unexpected answer {status}: {body[:300]!r}")
            latencies.append(time.perf_counter() - t0)
    finally:
        conn.close()


async def load(
    url: str, build: Callable[[int], Request], duration_s: float, concurrency: int
) -> tuple[int, list[float]]:
    """Closed loop: ``concurrency`` connections, each sending the next request when one answers."""
    parts = urlsplit(url)
    latencies: list[float] = []
    stop = time.perf_counter() + duration_s
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(_client(host, port, build, stop, latencies, c) for c in range(concurrency)))
    return len(latencies), latencies


def run_mode(state: Path, mode: Mode, workload: str, api_key: str, upstream: str | None,
             args: argparse.Namespace) -> Run:
    verify = workload == "verify"
    proc, url = start_router(state, mode, args.target == "minimal", upstream if verify else None)
    host = urlsplit(url).netloc
    try:
        if verify:
            image = base64.b64encode(os.urandom(2048)).decode()
            enroll(url, api_key, image)
            build = verify_request(host, api_key, image)
        else:
            build = audit_request(host, api_key)
        warm, _ = asyncio.run(load(url, build, args.warmup_s, args.concurrency))
        cpu0, main0 = cpu_seconds(proc.pid), cpu_seconds(proc.pid, thread=proc.pid)
        n, lat = asyncio.run(load(url, build, args.duration_s, args.concurrency))
        cpu = cpu_seconds(proc.pid) - cpu0
        main = cpu_seconds(proc.pid, thread=proc.pid) - main0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat.sort()
    served = warm + n + (VERIFY_SUBJECTS if verify else 0)
    return Run(n / args.duration_s, lat[int(0.99 * (len(lat) - 1))] * 1000, cpu / args.duration_s, cpu / max(n, 1),
               main / max(n, 1), served)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of process ``pid`` and its threads (the exporter's thread included),
    or of one ``thread`` of it (the main thread's id is the process id)."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rps: float
    p99_ms: float
    cpu_busy: float  # CPU seconds per second the router used: 1.0 = its core saturated
    cpu_per_request_s: float
    main_thread_per_request_s: float  # the event loop's thread: request handling and making spans
    served: int = 0  # requests the router answered in this run (warm-up and enrolments included)


def print_table(title: str, results: dict[str, list[Run]], spans: dict[str, int]) -> None:
    print(f"\n{title}")
    print("| tracing | req/s (median) | vs off | req/s per round | p99 ms | router CPU busy "
          "| router CPU µs/request | vs off | main thread µs/request | other threads µs/request | spans received "
          "| spans/request |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        off = results[BASE + "off" if name.startswith(BASE) else "off"]  # each tree against its own "off"
        base = statistics.median(r.rps for r in off)
        base_cpu = statistics.median(r.cpu_per_request_s for r in off)
        rps = statistics.median(r.rps for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        busy = statistics.median(r.cpu_busy for r in runs)
        cpu = statistics.median(r.cpu_per_request_s for r in runs)
        main = statistics.median(r.main_thread_per_request_s for r in runs)
        others = statistics.median(r.cpu_per_request_s - r.main_thread_per_request_s for r in runs)
        each = " ".join(f"{r.rps:.0f}" for r in runs)
        print(f"| {name} | {rps:.0f} | {100 * (rps / base - 1):+.1f}% | {each} | {p99:.1f} | {100 * busy:.0f}% "
              f"| {1e6 * cpu:.0f} | {100 * (cpu / base_cpu - 1):+.1f}% | {1e6 * main:.0f} | {1e6 * others:.0f} "
              f"| {spans[name]} | {spans[name] / max(1, sum(r.served for r in runs)):.2f} |")


def _commit(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=6.0)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workload", choices=(*WORKLOADS, "both"), default="both")
    ap.add_argument("--target", choices=("auto", "router", "minimal"), default="auto")
    ap.add_argument("--modes", nargs="+", default=[], metavar="MODE",
                    help="run only these modes (default: all; 'off' must be one: the baseline)")
    ap.add_argument("--variant-env", action="append", default=[], metavar="KEY=VALUE",
                    help="also run each mode with this variable set on the router (repeatable): an A/B in one run")
    ap.add_argument("--baseline-src", type=Path, metavar="DIR",
                    help="also run each mode on the router of this tree (a worktree of the previous commit)")
    ap.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.modes and "off" not in args.modes:
        ap.error("--modes must include 'off', the baseline of the table")
    bad = [kv for kv in args.variant_env if "=" not in kv]
    if bad:
        ap.error(f"--variant-env takes KEY=VALUE, got {bad}")
    variant = dict(kv.split("=", 1) for kv in args.variant_env)
    if args.serve_minimal:
        serve_minimal(args.serve_minimal)
        return
    if args.baseline_src is not None:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "router" / "__main__.py").exists():
            ap.error(f"--baseline-src {args.baseline_src} holds no router/ (make it with git worktree add)")
    if args.target == "auto":
        args.target = "router" if router_importable() else "minimal"
    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    if args.target == "minimal" and "verify" in workloads:
        print("the stand-in target has no verify flow: audit-404 only")
        workloads = ["audit-404"]

    # The server gets CPU 0, this process (load + receiver + fake hasher) the others: the receiver
    # and the hasher stand for a collector and pods on other hosts, whose CPU must not be charged
    # to the router.
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[1:])
    upstream_proc = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, OtlpSink(keep_spans=False) as sink:
            state = Path(tmp)
            _, api_key, _ = write_keys(state)
            upstream = None
            if "verify" in workloads:
                upstream_proc, upstream = start_upstream()
            results: dict[str, dict[str, list[Run]]] = {w: {} for w in workloads}
            spans: dict[str, dict[str, int]] = {w: {} for w in workloads}
            for _ in range(args.rounds):
                for workload in workloads:
                    for mode in selected_modes(sink, args.modes, variant, args.baseline_src):
                        before = sink.received
                        results[workload].setdefault(mode.name, []).append(
                            run_mode(state, mode, workload, api_key, upstream, args))
                        time.sleep(1.0)  # the router flushed at exit; let the receiver drain
                        spans[workload][mode.name] = spans[workload].get(mode.name, 0) + sink.received - before
    finally:
        if upstream_proc is not None:
            upstream_proc.terminate()
            upstream_proc.wait(timeout=30)

    print(f"server pinned to CPU 0, load + receiver + fake hasher on {cpus[1:] or cpus}; CPUs: {os.cpu_count()}")
    if args.baseline_src is not None:
        print(f"baseline ({BASE!r} rows): the router of {args.baseline_src} at {_commit(args.baseline_src)}; "
              f"this tree at {_commit(REPO)}")
    print(f"target: {args.target}; concurrency {args.concurrency}, {args.duration_s:g} s x {args.rounds} rounds "
          f"(after {args.warmup_s:g} s warm-up), median of rounds")
    titles = {
        "audit-404": "worst case: GET /v1/audit/<unknown id> (404), 2 spans/request",
        "verify": f"realistic: POST /v1/verify (face, {VERIFY_SUBJECTS} enrolled subjects, fake hasher)",
    }
    for workload in workloads:
        print_table(titles[workload], results[workload], spans[workload])


if __name__ == "__main__":
    main()
