"""`servestack bench`: every benchmark behind BENCHMARKS.md, through bench/run_all.py.

bench/ is not part of the installed package (the scripts need the source tree: they start
servers and read the repository's config), so this command loads bench/run_all.py from the
checkout it was installed from, editable installs and `make` included.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RUN_ALL = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"


def _load_run_all(path: Path = RUN_ALL) -> ModuleType | None:
    if not path.exists():
        return None
    if "servestack_bench_run_all" in sys.modules:
        return sys.modules["servestack_bench_run_all"]
    spec = importlib.util.spec_from_file_location("servestack_bench_run_all", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the benchmarks and rewrite the tables in BENCHMARKS.md",
        description="Run every bench/bench_*.py (medians of --repeats runs, the exact commands printed) and "
                    "replace their tables in BENCHMARKS.md between <!-- bench:NAME --> markers. "
                    "GPU-only scripts run only where CUDA is present. Conventions: bench/README.md.",
    )
    run_all = _load_run_all()
    if run_all is None:
        p.set_defaults(func=lambda _args: _missing())
        return
    run_all.add_arguments(p)
    p.set_defaults(func=run_all.run)


def _missing() -> int:
    print(f"error: {RUN_ALL} not found: `servestack bench` needs the source checkout (git clone, then "
          "`make run` or `pip install -e .`)", file=sys.stderr)
    return 2
