"""`servestack loadtest`: a headless Locust run with a report and a pass/fail verdict for CI.

Target, in this order:
1. `--host URL`: any router (local, a port-forward, a cluster ingress). The key comes from
   `--api-key`, else `$SERVESTACK_API_KEY`, else the stack file of `--state-dir` if there is one.
2. A stack already running from `--state-dir` (its `stack.json`, launcher alive, router ready):
   `servestack up` in another terminal, then `servestack loadtest`.
3. Otherwise a stack started for this run (`servestack up` on free ports, its state and logs in
   OUT/stack, the artifact cache shared with STATE_DIR/cache) and stopped afterwards;
   `--no-start` turns this into an error instead.

Locust runs as a subprocess (`python -m locust -f <scenario>[,<shape>] --headless ...`, the
exact command is printed), writing its CSVs and HTML report into OUT; the users also leave the
final tables and per-arm statistics there, from which summary.json and summary.md are built.

Exit status: 0 when the run met its limits, 1 when it did not (error rate, p99, or no request
completed), 2 when the run itself failed (Locust crashed, no stack).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import load_tests
from load_tests.summary import apply_limits, render_markdown, summarize_dir, write_summary
from servestack.stackfile import DEFAULT_STATE_DIR, StackInfo, read_stack_file

SCENARIOS = ("verify", "enroll", "hash", "explain", "mixed", "labelled")
SHAPES = ("step", "spike", "soak")
CSV_PREFIX = "locust"
LOCUSTFILES = Path(load_tests.__file__).resolve().parent / "locustfiles"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


class LoadTestError(RuntimeError):
    """The run could not happen (no target, Locust failed): exit status 2."""


def parse_duration(text: str) -> float:
    """'60s', '5m', '1h30m', '90' -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 5m, 1h30m)")
    hours, minutes, seconds = match.groups()
    total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    if total <= 0:
        raise argparse.ArgumentTypeError("duration must be > 0")
    return total


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="run a headless Locust load test with a report and pass/fail limits",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="mixed", help="traffic mix (default: mixed)")
    p.add_argument("--users", type=int, default=10, help="concurrent users, the peak with --shape (default: 10)")
    p.add_argument("--duration", type=parse_duration, default=parse_duration("60s"),
                   help="run time, e.g. 60s, 5m (default: 60s)")
    p.add_argument("--spawn-rate", type=float, default=None,
                   help="users started per second (default: reach --users in 5 s)")
    p.add_argument("--shape", choices=SHAPES, default=None,
                   help="load shape instead of a constant user count: step, spike, soak (load_tests/shapes.py)")
    p.add_argument("--host", default=None, help="router base URL; default: a running or a started local stack")
    p.add_argument("--api-key", default=None, help="client API key (default: $SERVESTACK_API_KEY or stack.json)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help="where to find a running stack (stack.json) and the artifact cache (default: .servestack)")
    p.add_argument("--no-start", action="store_true", help="never start a stack: fail when none runs")
    p.add_argument("--up-arg", action="append", default=[], metavar="ARG",
                   help="extra `servestack up` argument for a started stack, e.g. --up-arg=--no-explainer")
    p.add_argument("--stack-timeout-s", type=float, default=1200.0,
                   help="deadline for starting a stack (the first start prepares models) (default: 1200)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: STATE_DIR/loadtests/<scenario>-<UTC time>)")
    p.add_argument("--max-error-rate", type=float, default=0.01,
                   help="fail when failures/requests exceeds this (default: 0.01; negative: no limit)")
    p.add_argument("--max-p99-ms", type=float, default=None,
                   help="fail when any endpoint's p99 exceeds this, streamed explanations excepted (default: none)")
    p.add_argument("--think-time", type=float, nargs=2, default=None, metavar=("MIN_S", "MAX_S"),
                   help="pause between a user's requests (default: 0.1 0.5)")
    p.add_argument("--subjects", type=int, default=None, help="enrolled population, Zipf-distributed (default: 1000)")
    p.add_argument("--locust-arg", action="append", default=[], metavar="ARG",
                   help="extra Locust argument, e.g. --locust-arg=--processes=2")
    p.set_defaults(func=run)


@dataclass
class Target:
    host: str
    api_key: str
    source: str  # "given" | "running" | "started"


def _stack_alive(info: StackInfo) -> bool:
    if info.pid:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's process
    router = info.services.get("router")
    if not router:
        return False
    try:
        return httpx.get(f"{router}/readyz", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stack_file(state_dir: Path) -> StackInfo | None:
    try:
        return read_stack_file(state_dir)
    except FileNotFoundError:
        return None


def _running_stack(state_dir: Path) -> StackInfo | None:
    info = _stack_file(state_dir)
    return info if info is not None and _stack_alive(info) else None


def build_locust_command(args: argparse.Namespace, host: str, out: Path) -> list[str]:
    files = [str(LOCUSTFILES / f"{args.scenario}.py")]
    if args.shape:
        files.append(str(LOCUSTFILES / f"shape_{args.shape}.py"))
    cmd = [sys.executable, "-m", "locust", "-f", ",".join(files), "--headless", "--host", host,
           "--csv", str(out / CSV_PREFIX), "--html", str(out / "report.html"), "--only-summary",
           # In-flight requests (explanation streams) finish instead of being cut at the deadline.
           "--stop-timeout", "10",
           # The verdict is ours (summary limits), not Locust's "any error" rule.
           "--exit-code-on-error", "0"]
    if not args.shape:
        cmd += ["--users", str(args.users), "--spawn-rate", f"{_spawn_rate(args):g}", "--run-time",
                f"{args.duration:g}s"]
    return cmd + list(args.locust_arg)


def _spawn_rate(args: argparse.Namespace) -> float:
    return args.spawn_rate if args.spawn_rate else max(1.0, args.users / 5)


def build_locust_env(args: argparse.Namespace, api_key: str, out: Path) -> dict[str, str]:
    """Settings for load_tests (context.py, shapes.py) as environment variables."""
    env = {"SERVESTACK_LOADTEST_API_KEY": api_key, "SERVESTACK_LOADTEST_EXTRA_DIR": str(out)}
    if args.think_time:
        env["SERVESTACK_LOADTEST_WAIT_MIN_S"], env["SERVESTACK_LOADTEST_WAIT_MAX_S"] = map(str, args.think_time)
    if args.subjects:
        env["SERVESTACK_LOADTEST_SUBJECTS"] = str(args.subjects)
    if args.shape:
        env.update({"SERVESTACK_SHAPE_USERS": str(args.users), "SERVESTACK_SHAPE_DURATION_S": f"{args.duration:g}",
                    "SERVESTACK_SHAPE_SPAWN_RATE": f"{_spawn_rate(args):g}"})
    return env


def printable_command(cmd: list[str], env: dict[str, str]) -> str:
    """The command as a shell line, the API key masked."""
    shown = {k: ("***" if k.endswith("API_KEY") else v) for k, v in env.items()}
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in shown.items()), *map(shlex.quote, cmd)])


def run_locust(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
    try:
        proc = subprocess.run(cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoadTestError(f"Locust did not finish within {timeout_s:.0f} s") from exc
    return proc.returncode


def _resolve_api_key(args: argparse.Namespace, info: StackInfo | None) -> str:
    if args.api_key:
        return str(args.api_key)
    if os.environ.get("SERVESTACK_API_KEY"):
        return os.environ["SERVESTACK_API_KEY"]
    return info.api_key if info else ""


def execute(args: argparse.Namespace, target: Target, out: Path) -> dict[str, Any]:
    """Run Locust against the target and build the summary (limits applied)."""
    cmd = build_locust_command(args, target.host, out)
    env = build_locust_env(args, target.api_key, out)
    command = printable_command(cmd, env)
    print(f"$ {command}", flush=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    # Locust's own start-up, the stop timeout and the final report on top of the run time.
    rc = run_locust(cmd, env, timeout_s=args.duration + 120)
    if rc != 0:
        raise LoadTestError(f"Locust exited with status {rc}")
    meta = {"scenario": args.scenario, "host": target.host, "target": target.source, "users": args.users,
            "spawn_rate": _spawn_rate(args), "duration_s": args.duration, "shape": args.shape,
            "started_at": started_at, "command": command, "out_dir": str(out)}
    try:
        summary = summarize_dir(out, CSV_PREFIX, meta)
    except (FileNotFoundError, ValueError) as exc:
        raise LoadTestError(f"no usable Locust statistics in {out}: {exc}") from exc
    max_error_rate = args.max_error_rate if args.max_error_rate >= 0 else None
    return apply_limits(summary, max_error_rate, args.max_p99_ms)


def run(args: argparse.Namespace) -> int:
    out = args.out or args.state_dir / "loadtests" / f"{args.scenario}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    launcher = None
    try:
        if args.host:
            target = Target(args.host.rstrip("/"), _resolve_api_key(args, _stack_file(args.state_dir)), "given")
        elif (info := _running_stack(args.state_dir)) is not None:
            target = Target(info.services["router"], _resolve_api_key(args, info), "running")
        elif args.no_start:
            raise LoadTestError(f"no running stack in {args.state_dir} (and --no-start): run `servestack up`")
        else:
            from servestack.background import StackStartError, start_stack

            print(f"starting a stack for this run (logs in {out / 'stack'}) ...", flush=True)
            started = time.monotonic()
            try:
                launcher, info = start_stack(out / "stack", *args.up_arg, timeout_s=args.stack_timeout_s,
                                             cache_dir=(args.state_dir / "cache").resolve())
            except StackStartError as exc:
                raise LoadTestError(str(exc)) from exc
            print(f"stack ready in {time.monotonic() - started:.0f} s: {info.services['router']}", flush=True)
            target = Target(info.services["router"], _resolve_api_key(args, info), "started")
        summary = execute(args, target, out)
    except LoadTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if launcher is not None:
            from servestack.background import stop_stack

            stop_stack(launcher)
    write_summary(out, summary)
    print(render_markdown(summary))
    print(f"report: {out / 'report.html'}  summary: {out / 'summary.md'}, {out / 'summary.json'}")
    return 0 if summary["passed"] else 1
