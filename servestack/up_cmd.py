"""`servestack up`: the whole stack on one machine, one process per service.

Router, face hasher v1 (stable), face hasher v2 (canary), fingerprint hasher v1 and the
explainer run as separate processes on 127.0.0.1 with the CPU backends and SQLite, sharing the
machine's cores by explicit thread counts. While the stack runs, `<state-dir>/stack.json` says
where everything is (servestack/stackfile.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from servestack.local_config import write_keys, write_policy
from servestack.stackfile import STACK_FILE, StackInfo, write_stack_file
from servestack.supervisor import ServiceSpec, StackError, Supervisor, check_ports_free


@dataclass(frozen=True)
class HasherPod:
    name: str
    model: str
    version: str
    default_port: int


HASHERS = (
    HasherPod("hasher-face-v1", "face", "1", 8101),
    HasherPod("hasher-face-v2", "face", "2", 8102),
    HasherPod("hasher-fingerprint-v1", "fingerprint", "1", 8111),
)
# Each hasher also serves the Open Inference Protocol over gRPC, on its HTTP port + this (8151, ...).
GRPC_PORT_DELTA = 50
# Every port the stack listens on by default (background stacks move them all by one offset).
DEFAULT_PORTS = {"router": 8000, **{h.name: h.default_port for h in HASHERS}, "explainer": 8200,
                 **{f"{h.name} (gRPC)": h.default_port + GRPC_PORT_DELTA for h in HASHERS}}
PORT_FLAGS = {
    "router": "router_port",
    "hasher-face-v1": "face_v1_port",
    "hasher-face-v2": "face_v2_port",
    "hasher-fingerprint-v1": "fingerprint_port",
    "explainer": "explainer_port",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "up",
        help="run the whole stack locally (CPU backends, SQLite, seeded weights)",
        description=(
            "Start the router, face hasher v1 (stable) and v2 (canary), fingerprint hasher v1 and the "
            "explainer as separate processes, wait until each is ready, print where they are, and keep "
            "them running until Ctrl-C / SIGTERM. A child that dies is restarted with backoff."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--state-dir", type=Path, default=Path(".servestack"),
                   help="run-time files: stack.json, logs/, policy.yaml, keys.yaml, audit.db")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="weights, engines and the converted LLM (default: STATE_DIR/cache); reused across runs")
    p.add_argument("--host", default="127.0.0.1", help="address every service binds")
    p.add_argument("--port-offset", type=int, default=0, help="added to every service's port")
    for name, dest in PORT_FLAGS.items():
        grpc = f" (OIP over gRPC on this + {GRPC_PORT_DELTA})" if name.startswith("hasher") else ""
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=int, default=DEFAULT_PORTS[name],
                       help=f"port of {name}{grpc}")
    p.add_argument("--hasher-threads", type=int, default=1,
                   help="engine threads per hasher pod (3 pods + the explainer share the cores)")
    p.add_argument("--explainer-threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                   help="CPU threads of the vLLM explainer")
    p.add_argument("--no-explainer", action="store_true",
                   help="skip the vLLM explainer (explanations then answer 503)")
    p.add_argument("--otlp-endpoint", default=None,
                   help="OTLP/HTTP base URL for every process's spans, e.g. http://127.0.0.1:4318 "
                        "(default: the OTEL_EXPORTER_OTLP_ENDPOINT variable, if set)")
    p.add_argument("--max-restarts", type=int, default=3, help="restarts of a dying child before giving up")
    p.add_argument("--startup-timeout-s", type=float, default=600.0, help="per-service readiness deadline")
    p.add_argument("--skip-prepare", action="store_true",
                   help="do not build missing weights/engines/LLM before starting (pods then fail fast)")
    p.set_defaults(func=run)


def _service_ports(args: argparse.Namespace) -> dict[str, int]:
    return {name: getattr(args, dest) + args.port_offset for name, dest in PORT_FLAGS.items()}


def build_specs(args: argparse.Namespace, cache_dir: Path, policy: Path, keys: Path) -> list[ServiceSpec]:
    """The processes to run, explainer first (slowest start), router last."""
    ports = _service_ports(args)
    logs = args.state_dir / "logs"
    py = sys.executable
    otel: dict[str, str] = {}
    if args.otlp_endpoint:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": args.otlp_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    specs: list[ServiceSpec] = []
    if not args.no_explainer:
        from llm_serving.runtime_env import recommended_env

        specs.append(ServiceSpec(
            name="explainer", argv=[py, "-m", "llm_serving"], host=args.host, port=ports["explainer"],
            ready_path="/readyz", log_path=logs / "explainer.log", startup_timeout_s=args.startup_timeout_s,
            env={
                **recommended_env(args.explainer_threads), **otel,
                "SERVESTACK_EXPLAINER_HOST": args.host, "SERVESTACK_EXPLAINER_PORT": str(ports["explainer"]),
                "SERVESTACK_EXPLAINER_CACHE_DIR": str(cache_dir),
                "SERVESTACK_EXPLAINER_THREADS": str(args.explainer_threads),
            },
        ))
    for pod in HASHERS:
        grpc_port = ports[pod.name] + GRPC_PORT_DELTA
        specs.append(ServiceSpec(
            name=pod.name, argv=[py, "-m", "trt_serving"], host=args.host, port=ports[pod.name],
            ready_path="/v2/health/ready", log_path=logs / f"{pod.name}.log",
            startup_timeout_s=args.startup_timeout_s, extra_ports={"grpc": grpc_port},
            env={
                **otel,
                "SERVESTACK_HASHER_MODEL": pod.model, "SERVESTACK_HASHER_VERSION": pod.version,
                "SERVESTACK_HASHER_HOST": args.host, "SERVESTACK_HASHER_PORT": str(ports[pod.name]),
                "SERVESTACK_HASHER_GRPC_PORT": str(grpc_port),
                "SERVESTACK_HASHER_CACHE_DIR": str(cache_dir),
                "SERVESTACK_HASHER_THREADS": str(args.hasher_threads),
                # One engine thread per pod: OpenMP/oneDNN must not spawn one per core on top.
                "OMP_NUM_THREADS": str(args.hasher_threads),
            },
        ))
    specs.append(ServiceSpec(
        name="router", argv=[py, "-m", "router"], host=args.host, port=ports["router"],
        ready_path="/readyz", log_path=logs / "router.log", startup_timeout_s=args.startup_timeout_s,
        env={
            **otel,
            "SERVESTACK_ROUTER_HOST": args.host, "SERVESTACK_ROUTER_PORT": str(ports["router"]),
            "SERVESTACK_ROUTER_POLICY_PATH": str(policy), "SERVESTACK_ROUTER_KEYS_FILE": str(keys),
            "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{(args.state_dir / 'audit.db').resolve()}",
        },
    ))
    return specs


def prepare_artifacts(console: Console, cache_dir: Path, with_explainer: bool) -> None:
    """Build seeded weights, default engines and the converted LLM once (cached in cache_dir)."""
    steps: list[tuple[str, list[str]]] = [
        (pod.name, [sys.executable, "-m", "trt_serving.prepare", "--cache-dir", str(cache_dir),
                    "--model", pod.model, "--version", pod.version])
        for pod in HASHERS
    ]
    if with_explainer:
        steps.append(("explainer", [sys.executable, "-m", "llm_serving.prepare", "--cache-dir", str(cache_dir)]))
    for name, argv in steps:
        started = time.monotonic()
        console.print(f"[bold]prepare[/] {name}: {' '.join(argv[1:])}")
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)
        if proc.returncode != 0:
            raise StackError(f"preparing {name} failed (exit {proc.returncode}):\n" + proc.stdout[-4000:])
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        console.print(f"  [green]ok[/] in {time.monotonic() - started:.1f} s -> {last}")


def _print_ready(console: Console, info: StackInfo, specs: list[ServiceSpec]) -> None:
    table = Table(title="ServeStack is up", show_lines=False)
    table.add_column("service")
    table.add_column("url")
    table.add_column("log")
    for spec in specs:
        extra = "".join(f"  {name} {spec.host}:{port}" for name, port in spec.extra_ports.items())
        table.add_row(spec.name, spec.base_url + extra, str(spec.log_path))
    console.print(table)
    router = info.services["router"]
    console.print(f"API docs: {router}/docs    metrics: {router}/metrics    stack file: "
                  f"{info.state_dir / STACK_FILE}")
    console.print("Try it (enrol, then verify, then read the explanation):")
    console.print(curl_example(router, info.api_key, info.state_dir), soft_wrap=True, highlight=False)
    console.print("Ctrl-C stops every process.")


def curl_example(router: str, api_key: str, state_dir: Path) -> str:
    """A ready-to-paste shell snippet against the running stack (the README's, with this stack's values).

    The body goes through printf and `--data-binary @-`: a body passed as one command-line argument
    is capped at 128 KiB by the kernel, which two base64 images exceed.
    """
    samples = state_dir / "samples"
    return (
        f"KEY={api_key} R={router} S={samples}\n"
        "body() { printf '{\"subject_id\": \"%s\", \"face\": \"%s\", \"fingerprint\": \"%s\"}' "
        "\"$1\" \"$(base64 -w0 \"$2\")\" \"$(base64 -w0 \"$3\")\"; }\n"
        "post() { curl -s \"$R$1\" -H \"Authorization: Bearer $KEY\" -H 'content-type: application/json' "
        "--data-binary @-; }\n"
        "body alice $S/face.jpg $S/fingerprint.png | post /v1/enroll\n"
        "body alice $S/face.jpg $S/fingerprint.png | post /v1/verify\n"
        "body alice $S/face2.jpg $S/fingerprint.png | post /v1/verify"
    )


class _Stop(Exception):
    """Raised from the signal handler to unwind into the cleanup path."""


def run(args: argparse.Namespace) -> int:
    # Piped output (CI logs, `make run | tee`) would otherwise wrap at 80 columns and cut the URLs.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    args.state_dir = args.state_dir.resolve()
    cache_dir = (args.cache_dir or args.state_dir / "cache").resolve()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor: Supervisor | None = None
    stack_path = args.state_dir / STACK_FILE
    try:
        ports = _service_ports(args)
        services = {name: f"http://{args.host}:{port}" for name, port in ports.items()}
        if args.no_explainer:
            services.pop("explainer")
        policy = write_policy(args.state_dir, services)
        keys_path, api_key, admin_key = write_keys(args.state_dir)
        specs = build_specs(args, cache_dir, policy, keys_path)
        check_ports_free(specs)
        if not args.skip_prepare:
            prepare_artifacts(console, cache_dir, with_explainer=not args.no_explainer)
        from servestack.samples import write_samples

        write_samples(args.state_dir / "samples")
        supervisor = Supervisor(specs, report=lambda msg: console.print(f"[yellow]{msg}[/]"),
                                max_restarts=args.max_restarts)
        console.print(f"starting {len(specs)} services (logs in {args.state_dir / 'logs'})")
        supervisor.start_all()

        def progress(name: str, elapsed: float, ready: bool) -> None:
            if ready:
                console.print(f"  [green]ready[/] {name} in {elapsed:.1f} s")
            else:
                console.print(f"  waiting for {name} ... {elapsed:.0f} s")

        supervisor.wait_ready(progress)
        info = StackInfo(
            services={s.name: s.base_url for s in specs}, api_key=api_key, admin_api_key=admin_key,
            state_dir=args.state_dir, pid=os.getpid(), logs={s.name: str(s.log_path) for s in specs},
        )
        write_stack_file(info)
        _print_ready(console, info, specs)
        while True:
            supervisor.supervise()
            time.sleep(0.5)
    except _Stop as stop:
        console.print(f"{stop}: stopping every service")
        return 0
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stack_path.unlink(missing_ok=True)
        if supervisor is not None:
            supervisor.stop_all()
            console.print("stopped")
