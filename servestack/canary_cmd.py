"""`servestack canary start|status|promote|abort|report`: drive a canary from the command line.

Local mode (default) finds the router and the keys in `<state-dir>/stack.json` (written by
`servestack up`), reads metrics from the router's own /metrics and moves weights through its
admin API. Kubernetes mode (`--kubernetes`) reads Prometheus (`--prometheus-url`) and patches the
router-policy ConfigMap (in-cluster config, else ~/.kube/config).

    servestack canary start face --to v2                 # walk 0 -> 20 -> ... -> 100 %, then promote
    servestack canary start face --to v2 --load-rps 0    # real traffic only
    servestack canary status face
    servestack canary abort face                         # from another terminal: the loop stops
    servestack canary report face-v2 --out report.html   # the A/B page, fetched with the client key

State lives in `<state-dir>/canary/<route>.json`: Ctrl-C and the same `start` resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import write_to_textfile
from rich.console import Console

from canary.actuators import ActuatorError, WeightActuator
from canary.analysis import CanaryAnalysis, Decision
from canary.controller import CanaryConflict, CanaryController
from canary.metrics import CanaryMetrics
from canary.sources import MetricSource
from canary.state import CanaryEvent, CanaryState, StateStore
from servestack.stackfile import DEFAULT_STATE_DIR, StackInfo, read_stack_file

KIND_STYLE = {"start": "cyan", "advance": "green", "hold": "yellow", "halt": "red", "promote": "bold green",
              "rollback": "bold red", "abort": "bold red", "resume": "cyan"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("canary", help="run a canary analysis (Flagger-style) on a route",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="canary_command", metavar="ACTION")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the stack's state dir")
        q.add_argument("--router-url", default=None, help="default: stack.json's router")
        q.add_argument("--admin-key", default=None, help="default: stack.json's admin key")
        q.add_argument("--kubernetes", action="store_true", help="Prometheus + ConfigMap instead of the local stack")
        q.add_argument("--prometheus-url", default="http://prometheus:9090")
        q.add_argument("--namespace", default="servestack")
        q.add_argument("--configmap", default="router-policy")

    s = sub.add_parser("start", help="walk a canary through its steps until promoted or rolled back",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("route")
    s.add_argument("--to", required=True, dest="canary_arm", help="the arm under canary, e.g. v2")
    s.add_argument("--from", dest="stable_arm", default=None, help="stable arm (default: the heaviest other arm)")
    s.add_argument("--analysis", type=Path, default=None,
                   help="CanaryAnalysis YAML (Flagger field names); overrides the flags below")
    s.add_argument("--interval-s", type=float, default=10.0)
    s.add_argument("--step-weight", type=float, default=20.0)
    s.add_argument("--max-weight", type=float, default=100.0)
    s.add_argument("--threshold", type=int, default=2, help="failed checks before rollback")
    s.add_argument("--min-requests", type=int, default=5, help="canary requests per interval before judging")
    s.add_argument("--max-error-rate", type=float, default=1.0, help="percent")
    s.add_argument("--max-p99-ms", type=float, default=1000.0)
    s.add_argument("--min-decision-agreement", type=float, default=None, help="percent (needs shadow traffic)")
    s.add_argument("--min-bit-agreement", type=float, default=None,
                   help="percent of code bits (precision canaries: same model version)")
    s.add_argument("--max-frr-increase", type=float, default=None,
                   help="gate (points): canary FRR at most stable FRR + this, always-valid 95 %% (labelled outcomes)")
    s.add_argument("--max-far-increase", type=float, default=None,
                   help="gate (points): halt when canary FAR is above stable FAR + this, 95 %% (labelled outcomes)")
    s.add_argument("--experiment", default=None, help="experiment whose report feeds the FRR/FAR gates "
                                                      "(default: the route's name)")
    s.add_argument("--load-rps", type=float, default=4.0,
                   help="local mode: verifications per second sent while the canary runs (0: none)")
    s.add_argument("--subjects", type=int, default=40, help="subjects enrolled for --load-rps")
    s.add_argument("--max-intervals", type=int, default=None, help="stop (resumable) after this many intervals")
    s.add_argument("--metrics-port", type=int, default=None, help="serve the canary's metrics on 127.0.0.1:PORT")
    common(s)
    s.set_defaults(func=cmd_start)
    for name, helptext, fn in (("status", "show the canary's state and its last events", cmd_status),
                               ("promote", "promote now: all traffic to the canary arm", cmd_promote),
                               ("abort", "roll back now: all traffic to the stable arm", cmd_abort)):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("route")
        common(q)
        if name == "status":
            q.add_argument("--events", type=int, default=15, help="how many of the last events to show")
        q.set_defaults(func=fn)
    r = sub.add_parser("report", help="fetch an experiment's A/B report (HTML page or JSON)")
    r.add_argument("experiment")
    r.add_argument("--out", type=Path, default=None, help="write the HTML page here (default: print the JSON)")
    r.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    r.add_argument("--router-url", default=None)
    r.add_argument("--api-key", default=None)
    r.set_defaults(func=cmd_report)


def analysis_from_args(args: argparse.Namespace) -> CanaryAnalysis:
    if args.analysis is not None:
        return CanaryAnalysis.model_validate(yaml.safe_load(args.analysis.read_text()))
    metrics: list[dict[str, Any]] = [
        {"name": "error-rate", "threshold_range": {"max": args.max_error_rate}},
        {"name": "request-duration", "threshold_range": {"max": args.max_p99_ms}},
    ]
    if args.min_decision_agreement is not None:
        metrics.append({"name": "decision-agreement", "threshold_range": {"min": args.min_decision_agreement}})
    if args.min_bit_agreement is not None:
        metrics.append({"name": "bit-agreement", "threshold_range": {"min": args.min_bit_agreement}})
    gates: list[dict[str, Any]] = []
    if getattr(args, "max_frr_increase", None) is not None:
        gates.append({"metric": "frr", "max": args.max_frr_increase, "mode": "non-inferiority"})
    if getattr(args, "max_far_increase", None) is not None:
        gates.append({"metric": "far", "max": args.max_far_increase, "mode": "no-harm"})
    return CanaryAnalysis(interval_s=args.interval_s, step_weight=args.step_weight, max_weight=args.max_weight,
                          threshold=args.threshold, min_requests=args.min_requests, metrics=metrics,
                          error_gates=gates)


def _stack(args: argparse.Namespace) -> StackInfo | None:
    try:
        return read_stack_file(args.state_dir)
    except FileNotFoundError:
        return None


def _local_endpoints(args: argparse.Namespace) -> tuple[str, str]:
    stack = _stack(args)
    router = args.router_url or (stack.services.get("router") if stack else None)
    key = args.admin_key or (stack.admin_api_key if stack else None)
    if not router or not key:
        raise SystemExit(f"no router found: start the stack (`servestack up`, writes {args.state_dir}/stack.json) "
                         "or pass --router-url and --admin-key")
    return router, key


def _wiring(args: argparse.Namespace, http: httpx.AsyncClient) -> tuple[MetricSource, WeightActuator]:
    if args.kubernetes:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        from canary.actuators.configmap import ConfigMapActuator
        from canary.sources.prometheus import PrometheusSource

        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()
        actuator = ConfigMapActuator(k8s.CoreV1Api(), args.namespace, args.configmap)
        return PrometheusSource(http, args.prometheus_url), actuator
    from canary.actuators.admin_api import AdminApiActuator
    from canary.sources.router_metrics import RouterMetricsSource

    router, key = _local_endpoints(args)
    source: MetricSource = RouterMetricsSource(http, [router])
    if hasattr(args, "interval_s") and analysis_from_args(args).error_gates:  # `canary start` only
        from canary.sources.experiment_report import ExperimentReportSource

        source = ExperimentReportSource(source, http, router, getattr(args, "experiment", None) or args.route,
                                        getattr(args, "stable_arm", None), key, since=time.time())
    return source, AdminApiActuator(http, router, key)


def _store(args: argparse.Namespace) -> StateStore:
    return StateStore(args.state_dir / "canary")


def _printer(console: Console, store: StateStore, metrics: CanaryMetrics):
    def on_event(state: CanaryState, event: CanaryEvent, _decision: Decision | None) -> None:
        bar = "█" * round(state.canary_weight / 5) + "·" * (20 - round(state.canary_weight / 5))
        style = KIND_STYLE.get(event.kind, "white")
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        console.print(f"{stamp} [{style}]{event.kind:<8}[/] {bar} {state.canary_arm} {state.canary_weight:5.1f} %  "
                      f"{event.reason}", highlight=False, soft_wrap=True)
        # Also a node-exporter textfile, so the last step is scrapeable after the process ends.
        write_to_textfile(str(store.directory / f"{state.route}.prom"), metrics.registry)

    return on_event


async def _start(args: argparse.Namespace, console: Console) -> int:
    analysis = analysis_from_args(args)
    store = _store(args)
    metrics = CanaryMetrics()
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    async with httpx.AsyncClient() as http:
        source, actuator = _wiring(args, http)
        weights = await actuator.get_weights(args.route)
        if args.canary_arm not in weights:
            console.print(f"[red]route {args.route!r} has no arm {args.canary_arm!r} (arms: {sorted(weights)})")
            return 2
        stable = args.stable_arm or max((a for a in weights if a != args.canary_arm), key=lambda a: weights[a],
                                        default=None)
        if stable is None:
            console.print(f"[red]route {args.route!r} has no other arm to compare {args.canary_arm!r} with")
            return 2
        console.print(f"canary [bold]{args.route}[/]: {stable} -> {args.canary_arm}, every {analysis.interval_s:g} s, "
                      f"step {analysis.step_weight:g} % up to {analysis.top_weight:g} %, rollback after "
                      f"{analysis.threshold} failed checks; checks: "
                      + (", ".join(f"{m.name} {m.threshold_range.model_dump(exclude_none=True)}"
                                   for m in analysis.metrics) or "none"), highlight=False, soft_wrap=True)
        ctl = CanaryController(analysis, source, actuator, store, metrics=metrics,
                               on_event=_printer(console, store, metrics))
        stop = asyncio.Event()
        load_tasks: list[asyncio.Task[None]] = []

        async def start_load(_state: CanaryState) -> None:
            if not args.kubernetes and args.load_rps > 0:
                load_tasks.append(await _start_load(args, http, stop, console))

        try:
            backend = (await actuator.get_backends(args.route)).get(args.canary_arm)
            state = await ctl.run(args.route, stable, args.canary_arm, canary_backend=backend,
                                  max_intervals=args.max_intervals, after_begin=start_load)
        except CanaryConflict as exc:
            console.print(f"[red]{exc}")
            return 2
        finally:
            stop.set()
            await asyncio.gather(*load_tasks)
    if state.phase == "succeeded":
        console.print(f"[bold green]promoted[/]: {args.canary_arm} serves 100 % of {args.route}")
        return 0
    if state.phase == "failed":
        console.print(f"[bold red]rolled back[/]: {state.last_reason}")
        return 1
    console.print(f"paused at {state.canary_weight:g} % (resume with the same command)")
    return 0


async def _start_load(args: argparse.Namespace, http: httpx.AsyncClient, stop: asyncio.Event,
                      console: Console) -> asyncio.Task[None]:
    from load_tests.canary_traffic import Subject, VerifyTraffic
    from load_tests.payloads import ImagePool

    stack = _stack(args)
    if stack is None:
        raise SystemExit("--load-rps needs the stack's client key from stack.json (or pass --load-rps 0)")
    router, _ = _local_endpoints(args)
    modality = args.route  # the local policy names routes after modalities
    pool = ImagePool.generate(size=min(args.subjects, 16), seed=11)
    subjects = [Subject(f"canary-{args.route}-{i:04d}", pool.enrolment(i, modality).b64,
                        pool.probe_of(i, modality).b64) for i in range(args.subjects)]
    traffic = VerifyTraffic(http, router, stack.api_key, modality, subjects, rate_per_s=args.load_rps)
    enrolled = await traffic.enrol()
    console.print(f"load: {enrolled}/{len(subjects)} subjects enrolled, {args.load_rps:g} verifications/s",
                  highlight=False, soft_wrap=True)
    return asyncio.create_task(traffic.run(stop), name="canary-load")


def cmd_start(args: argparse.Namespace) -> int:
    console = Console()
    try:
        return asyncio.run(_start(args, console))
    except KeyboardInterrupt:
        console.print(f"interrupted: the canary state is kept; `servestack canary start {args.route} "
                      f"--to {args.canary_arm}` resumes it")
        return 130
    except ActuatorError as exc:
        console.print(f"[red]{exc}")
        return 1


def cmd_status(args: argparse.Namespace) -> int:
    console = Console()
    state = _store(args).load(args.route)
    if state is None:
        console.print(f"no canary for route {args.route!r} in {_store(args).directory}")
        return 1
    console.print(f"[bold]{state.route}[/] {state.stable_arm} -> {state.canary_arm}: {state.phase}, "
                  f"canary weight {state.canary_weight:g} %, failed checks {state.failed_checks}, "
                  f"{state.iterations} intervals judged", highlight=False, soft_wrap=True)
    for e in state.events[-args.events:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e.at))
        console.print(f"  {stamp} [{KIND_STYLE.get(e.kind, 'white')}]{e.kind:<8}[/] {e.canary_weight:5.1f} %  "
                      f"{e.reason}", highlight=False, soft_wrap=True)
    return 0


async def _operator(args: argparse.Namespace, action: str, reason: str) -> CanaryState:
    async with httpx.AsyncClient() as http:
        source, actuator = _wiring(args, http)
        ctl = CanaryController(CanaryAnalysis(), source, actuator, _store(args))
        return await ctl.operator(args.route, action, reason)  # type: ignore[arg-type]


def _operator_cmd(args: argparse.Namespace, action: str, reason: str) -> int:
    console = Console()
    try:
        state = asyncio.run(_operator(args, action, reason))
    except (LookupError, CanaryConflict, ActuatorError) as exc:
        console.print(f"[red]{exc}")
        return 1
    console.print(f"{state.route}: {state.phase}, weights {state.weights()}", highlight=False, soft_wrap=True)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    return _operator_cmd(args, "promote", "promoted by operator")


def cmd_abort(args: argparse.Namespace) -> int:
    return _operator_cmd(args, "rollback", "aborted by operator")


def cmd_report(args: argparse.Namespace) -> int:
    console = Console()
    stack = _stack(args)
    router = args.router_url or (stack.services.get("router") if stack else None)
    key = args.api_key or (stack.api_key if stack else None)
    if not router or not key:
        console.print("[red]no router found: start the stack or pass --router-url and --api-key")
        return 1
    path = f"/v1/experiments/{args.experiment}" + ("/report" if args.out else "")
    resp = httpx.get(router.rstrip("/") + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    if resp.status_code != 200:
        console.print(f"[red]{resp.status_code}: {resp.text[:500]}")
        return 1
    if args.out:
        args.out.write_text(resp.text)
        console.print(f"wrote {args.out} (open it in a browser)")
    else:
        console.print_json(resp.text)
    return 0
