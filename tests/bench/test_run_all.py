"""bench/run_all.py: medians across runs, marker replacement in BENCHMARKS.md, script discovery.

Runs against scripts written to a temp directory and a temp BENCHMARKS.md; never the real one.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from servestack import bench_cmd


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    module = bench_cmd._load_run_all()
    assert module is not None
    return module


def test_median_of_numbers_keeps_text_and_precision(run_all: ModuleType) -> None:
    lines = ["| resnet50 | 8 | 1.50 ms | 1,200 img/s |",
             "| resnet50 | 8 | 1.90 ms | 1,000 img/s |",
             "| resnet50 | 8 | 1.70 ms | 1,400 img/s |"]
    assert run_all.median_line(lines) == "| resnet50 | 8 | 1.70 ms | 1,200 img/s |"
    assert run_all.median_line(["| a | 1 |", "| a | 4 |"]) == "| a | 2 |"  # even count: mean of the middle two
    # Text that differs between runs: the first run's line.
    assert run_all.median_line(["| int8 | 3 |", "| fp16 | 5 |"]) == "| int8 | 3 |"
    assert run_all.median_line(["2026-11-23 run", "2026-11-23 run"]) == "2026-11-23 run"


def test_median_output_drops_runs_of_another_shape(run_all: ModuleType) -> None:
    runs = ["| x |\n| --- |\n| 1 |\n", "| x |\n| --- |\n| 3 |\n", "| x |\n| --- |\n| 9 |\n| 9 |\n"]
    assert run_all.median_output(runs) == "| x |\n| --- |\n| 2 |\n"
    assert run_all.median_output(["only\n"]) == "only\n"


def test_split_blocks(run_all: ModuleType) -> None:
    assert run_all.split_blocks("router", "| a |\n") == {"router": "| a |"}
    text = "<!-- bench:engines-cpu -->\n| cpu |\n<!-- /bench:engines-cpu -->\nnoise\n" \
           "<!-- bench:engines-gpu -->\n| gpu |\n<!-- /bench:engines-gpu -->\n"
    assert run_all.split_blocks("engines", text) == {"engines-cpu": "| cpu |", "engines-gpu": "| gpu |"}


def test_replace_block_in_place_append_and_idempotent(run_all: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nIntro.\n\n<!-- bench:router -->\nold table\n<!-- /bench:router -->\n\nOutro.\n")
    run_all.update_document(doc, {"router": "| new | \\d |", "tracing": "| t |"})
    once = doc.read_text()
    assert once == ("# Benchmarks\n\nIntro.\n\n<!-- bench:router -->\n| new | \\d |\n<!-- /bench:router -->\n\n"
                    "Outro.\n\n## tracing\n\n<!-- bench:tracing -->\n| t |\n<!-- /bench:tracing -->\n")
    run_all.update_document(doc, {"router": "| new | \\d |", "tracing": "| t |"})
    assert doc.read_text() == once
    fresh = tmp_path / "NEW.md"
    run_all.update_document(fresh, {"a": "| 1 |"})
    assert fresh.read_text().startswith("# Benchmarks\n") and "<!-- bench:a -->\n| 1 |\n<!-- /bench:a -->" in \
        fresh.read_text()


def _script(directory: Path, name: str, body: str) -> None:
    (directory / f"bench_{name}.py").write_text(textwrap.dedent(body))


def test_run_takes_medians_skips_gpu_and_rewrites_only_markers(
    run_all: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    # Prints 10, 30, 20 on its three runs: the median is 20.
    _script(bench, "alpha", """
        import sys
        from pathlib import Path
        counter = Path(__file__).with_name("alpha.count")
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        print("| model | img/s |")
        print("| --- | ---: |")
        print(f"| r50 | {[10, 30, 20][n]} |")
        print("args", sys.argv[1:], file=sys.stderr)
    """)
    _script(bench, "multi", """
        REPORTS_MEDIANS = True
        from pathlib import Path
        counter = Path(__file__).with_name("multi.count")
        counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
        print("<!-- bench:multi-cpu -->\\n| cpu | 1 |\\n<!-- /bench:multi-cpu -->")
        print("<!-- bench:multi-gpu -->\\n| gpu | 2 |\\n<!-- /bench:multi-gpu -->")
    """)
    _script(bench, "gpu", """
        REQUIRES_CUDA = True
        raise SystemExit("must not run without CUDA")
    """)
    _script(bench, "broken", "raise SystemExit(3)\n")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("keep me\n<!-- bench:alpha -->\nstale\n<!-- /bench:alpha -->\nkeep me too\n")
    monkeypatch.setenv("SERVESTACK_BENCH_CUDA", "0")
    flags = {s.name: (s.reports_medians, s.requires_cuda) for s in run_all.discover(bench)}
    assert flags == {"alpha": (False, False), "broken": (False, False), "gpu": (False, True), "multi": (True, False)}

    rc = run_all.main(["--bench-dir", str(bench), "--output", str(doc)])
    assert rc == 1  # bench_broken failed; the others still updated
    text = doc.read_text()
    assert text.startswith("keep me\n<!-- bench:alpha -->\n| model | img/s |\n| --- | ---: |\n| r50 | 20 |\n")
    assert "median of 3 runs" in text and "keep me too\n" in text
    assert "<!-- bench:multi-cpu -->\n| cpu | 1 |" in text and "<!-- bench:multi-gpu -->\n| gpu | 2 |" in text
    assert "medians reported by the script" in text
    assert "bench:gpu" not in text and "bench:broken" not in text
    assert (bench / "multi.count").read_text() == "1"
    out = capsys.readouterr()
    assert f"$ python {bench / 'bench_alpha.py'}" in out.out  # the exact command, printed
    assert "skip gpu: needs CUDA" in out.out
    assert "bench_broken.py exited with status 3" in out.err


def test_quick_is_passed_through_and_no_write_leaves_the_file(run_all: ModuleType, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    _script(bench, "argv", "import sys\nassert '--quick'\nprint('| args |', ' '.join(sys.argv[1:]), '|')\n")
    _script(bench, "plain", "import sys\nprint('| plain |', len(sys.argv), '|')\n")
    doc = tmp_path / "B.md"
    assert run_all.main(["--bench-dir", str(bench), "--output", str(doc), "--quick", "--no-write"]) == 0
    assert not doc.exists()
    out = capsys.readouterr().out
    assert "| args | --quick |" in out and "--quick` · 1 run" in out
    assert "| plain | 1 |" in out  # a script without a --quick option is not given one
    assert run_all.main(["--bench-dir", str(bench), "--only", "nope"]) == 2


def test_servestack_bench_parser(run_all: ModuleType) -> None:
    parser = argparse.ArgumentParser(prog="servestack")
    bench_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--quick", "--only", "router", "--repeats", "5"])
    assert (args.quick, args.only, args.repeats, args.func.__name__) == (True, ["router"], 5, "run")
    assert args.output == run_all.DEFAULT_OUTPUT and args.output.name == "BENCHMARKS.md"
