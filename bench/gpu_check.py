"""The GPU check: one command that fills the GPU tables inside a short device lease.

Runs, each stage in its own time-boxed process (bench/gpu_stages.py; a stage that fails or runs
out of time is recorded and the next one runs), within ``--total-s`` (8 minutes by default):

1. seeded weights + torch fp32 reference codes for face (ResNet50) and fingerprint (ResNet18);
2. the ``cuda`` engine alone, fp32/fp16/bf16 at batch 1/32/128/256, in CUDA graphs mode, then
   eager, then ``torch.compile`` (Inductor + CUDA graphs, fp16 only: each batch compiles);
3. one real hasher pod with the cuda backend, RGB JPEG uploads in, codes out, at concurrency 64
   (and 256) against the engine alone at the batch the dynamic batcher forms;
4. the ``@pytest.mark.gpu`` tests (the carried pytest; they skip without CUDA).

Writes under ``--out`` (``$OUT`` on the device machine): ``gpu_tables.md`` (BENCHMARKS.md blocks,
device named in the footer), ``gpu_check.log`` (every command and its output), ``gpu_rows.jsonl``
(the raw rows) and ``pod.log``. ``--dry-run`` runs the same stages on the CPU with tiny batches
(the ``cuda`` engine's CPU mode), so the script is exercised by the test suite between leases.

    bash bench/gpu_check.sh --out "$OUT"                        # on the lent machine (see README)
    python bench/gpu_check.py --dry-run --out /tmp/gpu-dry     # here, on the CPU
    python bench/gpu_check.py --apply DIR/gpu_tables.md        # put a real run's tables into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DRY_RUN_MARK = "Dry run on the CPU"
TESTS = ["tests/trt_serving/test_cuda_engine.py"]
GOAL_ENGINE, GOAL_SERVED = 20_000, 10_000


@dataclass
class Stage:
    name: str
    argv: list[str]  # gpu_stages.py arguments after the common ones; a full command for "tests"
    timeout_s: float
    budget_flag: bool = False  # the stage takes --budget-s (stops starting cells in time)


def plan(dry: bool) -> list[Stage]:
    """What runs, most valuable first: a lease cut short still yields the goal rows."""
    if dry:
        # The CPU has no fast fp16 convolution and 2 cores here: 32x32 timed inputs, 2 held-out images.
        cells = ["--precisions", "fp32", "fp16", "bf16", "--batches", "1", "2", "--seconds", "0.05", "--heldout", "2",
                 "--input-size", "32"]
        return [
            Stage("weights", ["weights", "--models", "fingerprint"], 240),
            Stage("engine fingerprint eager", ["engine", "--model", "fingerprint", "--mode", "eager", "--device",
                                               "cpu", *cells], 240, True),
            Stage("serve fingerprint fp32", ["serve", "--model", "fingerprint", "--precision", "fp32",
                                             "--concurrency", "4", "--seconds", "1", "--max-batch-size", "4",
                                             "--decode-workers", "1"], 300),
            Stage("gpu tests", [], 120),
        ]
    full = ["--batches", "1", "32", "128", "256", "--seconds", "1.0"]
    return [
        Stage("weights", ["weights", "--models", "face", "fingerprint"], 150),
        Stage("engine face graphs", ["engine", "--model", "face", "--mode", "graphs", *full], 110, True),
        Stage("serve face fp16", ["serve", "--model", "face", "--precision", "fp16", "--concurrency", "64", "256",
                                  "--seconds", "8", "--max-batch-size", "256"], 150),
        Stage("gpu tests", [], 150),
        Stage("engine fingerprint graphs", ["engine", "--model", "fingerprint", "--mode", "graphs", *full], 80, True),
        Stage("engine face eager", ["engine", "--model", "face", "--mode", "eager", *full], 70, True),
        Stage("engine fingerprint eager", ["engine", "--model", "fingerprint", "--mode", "eager", *full], 60, True),
        Stage("engine face inductor", ["engine", "--model", "face", "--mode", "inductor", "--precisions", "fp16",
                                       "--batches", "256", "--seconds", "1.0"], 150, True),
        Stage("engine fingerprint inductor", ["engine", "--model", "fingerprint", "--mode", "inductor", "--precisions",
                                              "fp16", "--batches", "256", "--seconds", "1.0"], 120, True),
    ]


def _probe_device(env: dict[str, str]) -> dict[str, object]:
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'available': c, 'name': torch.cuda.get_device_name(0) if c else 'cpu'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-500:]}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(stage: Stage, args: argparse.Namespace, rows: Path, remaining: float) -> list[str]:
    if stage.name == "gpu tests":
        # Plugins named, not auto-loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD in run_stages): the image's own
        # pytest plugins may not load under the carried pytest; the suite's settings need these two.
        return [sys.executable, "-m", "pytest", "-p", "pytest_asyncio.plugin", "-p", "pytest_timeout", "-m", "gpu",
                "-q", "-rA", "-p", "no:cacheprovider", *TESTS]
    argv = list(stage.argv)
    if stage.budget_flag:  # stop starting cells early enough to leave time to close and report
        argv += ["--budget-s", f"{max(5.0, min(stage.timeout_s, remaining) - 25):.0f}"]
    return [sys.executable, str(BENCH / "gpu_stages.py"), "--rows", str(rows), "--cache-dir", str(args.cache_dir),
            "--threads", str(args.threads), *argv]


def run_stages(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, object]]:
    """Runs each planned stage under its timeout and the total deadline; returns their outcomes."""
    rows, log_path = args.out / "gpu_rows.jsonl", args.out / "gpu_check.log"
    deadline = time.monotonic() + args.total_s
    outcomes: list[dict[str, object]] = []
    for stage in plan(args.dry_run):
        remaining = deadline - time.monotonic()
        if remaining < 20:
            outcomes.append({"stage": stage.name, "status": "skipped", "seconds": 0, "note": "total time spent"})
            continue
        cmd = _command(stage, args, rows, remaining)
        timeout = min(stage.timeout_s, remaining)
        started = time.monotonic()
        with log_path.open("a") as log:
            log.write(f"\n=== {stage.name} (timeout {timeout:.0f} s): {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                status, note = ("ok", "") if rc == 0 else ("failed", f"exit {rc}")
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # its own session: the pod and load generator it started go too
                proc.wait()
                status, note = "timed out", f"killed after {timeout:.0f} s"
        seconds = round(time.monotonic() - started, 1)
        if stage.name == "gpu tests":
            note = (note + "; " if note else "") + _pytest_summary(log_path)
        outcomes.append({"stage": stage.name, "status": status, "seconds": seconds, "note": note})
        print(f"{stage.name}: {status} in {seconds} s {note}", flush=True)
    return outcomes


def _pytest_summary(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    section = text[text.rfind("=== gpu tests"):]
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", section)
    return ", ".join(f"{n} {what}" for n, what in found) or "no pytest summary"


def _test_outcomes(log_path: Path) -> list[tuple[str, str]]:
    text = log_path.read_text(errors="replace")
    section = text[text.rfind("=== gpu tests"):]
    return re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) (?:\[\d+\] )?(\S+)", section, re.M)


def read_rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _n(value: object, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else "—"


def render(rows: list[dict[str, object]], outcomes: list[dict[str, object]], footer: str, log_path: Path) -> str:
    """BENCHMARKS.md blocks: engine-only, served, goals, tests and stages, each between bench markers."""
    mode_order = {"graphs": 0, "inductor": 1, "eager": 2}
    engine_rows = sorted((r for r in rows if r["stage"] == "engine" and "img_s" in r),
                         key=lambda r: (r["model"] != "face", mode_order.get(str(r["mode"]), 9), str(r["precision"]),
                                        int(r["batch"])))  # type: ignore[call-overload]
    out = ["<!-- bench:gpu-engines -->",
           "| model | mode | precision | batch | img/s (numpy in, codes out) | p50 ms / batch "
           "| img/s, input already on the device | bit agreement vs fp32 (torch, CPU) | first call s |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r['model']} ({r['arch']}) | {r['mode']} | {r['precision']} | {r['batch']}"
            f"{'' if r.get('input_size', 224) == 224 else ' @' + str(r['input_size']) + 'px'} | {_n(r['img_s'])} "
            f"| {_n(r['p50_ms'], 2)} | {_n(r['device_img_s'])} | {_n(r['agreement'], 4)} | {_n(r['warm_s'], 1)} |"
            for r in engine_rows]
    out += ["", footer, "<!-- /bench:gpu-engines -->", "", "<!-- bench:gpu-served -->",
            "| model | precision | concurrency | served img/s | p50 ms | errors | load client CPU "
            "| engine-only img/s (batch) | served / engine | decode+engine img/s | decode workers |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    served = [r for r in rows if r["stage"] == "serve"]
    out += [f"| {r['model']} | {r['precision']} | {r['concurrency']} | {_n(r['img_s'])} | {_n(r['p50_ms'], 1)} "
            f"| {r['errors']} | {_n(r['client_cpu'], 2)} | {_n(r['engine_img_s'])} ({r['engine_batch']}) "
            f"| {float(r['img_s']) / max(float(r['engine_img_s']), 1e-9):.0%} | {_n(r['decode_engine_img_s'])} "  # type: ignore[arg-type]
            f"| {r['decode_workers']} |" for r in served]
    out += ["", "RGB JPEG (quality 90, 300x300) uploads to `/v1/hash`, one image per request, from a separate "
            "load-generator process; the pod's dynamic batcher forms the batches.", footer,
            "<!-- /bench:gpu-served -->", "", "<!-- bench:gpu-goals -->", *_goals(engine_rows, served),
            "", footer, "<!-- /bench:gpu-goals -->", "", "<!-- bench:gpu-check -->",
            "| stage | status | seconds | note |", "| --- | --- | ---: | --- |"]
    out += [f"| {o['stage']} | {o['status']} | {o['seconds']} | {o['note']} |" for o in outcomes]
    tests = _test_outcomes(log_path)
    if tests:
        out += ["", "| `@gpu` test | outcome |", "| --- | --- |", *(f"| `{t}` | {o} |" for o, t in tests)]
    out += ["", footer, "<!-- /bench:gpu-check -->", ""]
    return "\n".join(out)


def _goals(engine_rows: list[dict[str, object]], served: list[dict[str, object]]) -> list[str]:
    face16 = [r for r in engine_rows if r["model"] == "face" and r["precision"] == "fp16"]
    best = max(face16, key=lambda r: float(r["img_s"]), default=None)  # type: ignore[arg-type]
    at64 = next((r for r in served if r["concurrency"] == 64), None)

    def line(goal: str, target: int, row: dict[str, object] | None, what: str) -> str:
        if row is None:
            return f"| {goal} | ≥ {target:,} img/s | not measured | — |"
        value = float(row["img_s"])  # type: ignore[arg-type]
        met = "yes" if value >= target else "no"
        return f"| {goal} | ≥ {target:,} img/s | {value:,.0f} ({what.format(**row)}) | {met} |"

    return ["| goal | target | measured | met |", "| --- | --- | --- | --- |",
            line("ResNet50 (face) `cuda` fp16 engine-only", GOAL_ENGINE, best, "{mode}, batch {batch}"),
            line("served per pod, JPEG in, concurrency 64", GOAL_SERVED, at64, "{model} {precision}")]


def footer_line(dry: bool, device: dict[str, object]) -> str:
    cpu = f"{os.cpu_count()} CPUs ({_cpu_name()})"
    when = time.strftime("%Y-%m-%d", time.gmtime())
    if dry:
        return f"_{DRY_RUN_MARK} ({cpu}, {when}): tiny batches, not GPU numbers; the tables' shape only._"
    return (f"_Device: {device.get('name')}; torch {device.get('torch')} (CUDA {device.get('cuda')}); {cpu}; "
            f"`bash bench/gpu_check.sh`, {when}._")


def apply(tables: Path, document: Path) -> int:
    sys.path.insert(0, str(BENCH))
    import run_all

    text = tables.read_text()
    if DRY_RUN_MARK in text:
        raise SystemExit(f"{tables} comes from a dry run: its numbers are not GPU numbers")
    run_all.update_document(document, run_all.split_blocks("gpu", text))
    print(f"{document}: GPU blocks replaced from {tables}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench/out/gpu"))
    p.add_argument("--dry-run", action="store_true", help="tiny batches on the CPU (the cuda engine's CPU mode)")
    p.add_argument("--total-s", type=float, default=None, help="all stages together (default 480; dry run 600)")
    p.add_argument("--cache-dir", type=Path, default=REPO / ".servestack" / "cache")
    p.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 2))
    p.add_argument("--apply", type=Path, metavar="TABLES", help="write a real run's gpu_tables.md into BENCHMARKS.md")
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.apply:
        return apply(args.apply, args.benchmarks)
    args.total_s = args.total_s or (600.0 if args.dry_run else 480.0)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_rows.jsonl", "gpu_check.log", "pod.log"):
        (args.out / name).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_SDK_DISABLED": "true",
           "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)}
    if args.dry_run:
        env["SERVESTACK_CUDA_ENGINE_DEVICE"] = "cpu"
    device = _probe_device(env)
    print(f"device: {device}", flush=True)
    outcomes = run_stages(args, env)
    tables = render(read_rows(args.out / "gpu_rows.jsonl"), outcomes, footer_line(args.dry_run, device),
                    args.out / "gpu_check.log")
    (args.out / "gpu_tables.md").write_text(tables)
    print(tables)
    return 0 if all(o["status"] == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
