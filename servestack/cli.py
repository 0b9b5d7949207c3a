"""The `servestack` command: one parser, subcommands registered by their own modules.

Each subcommand lives in `servestack/<name>_cmd.py` with `register(subparsers)`; imports are lazy
so that `servestack up --help` does not import torch or vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module, summary) — the order is the order of `servestack --help`.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("servestack.up_cmd", "run the whole stack locally"),
    ("servestack.build_cmd", "build a hasher engine artifact"),
    ("servestack.canary_cmd", "run a canary analysis"),
    ("servestack.loadtest_cmd", "run a Locust load test"),
    ("servestack.audit_cmd", "import labelled outcomes, prune old audit records"),
    ("servestack.bench_cmd", "run the benchmarks behind BENCHMARKS.md"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servestack",
        description="ServeStack: canary/A-B serving of biometric hashers with audit explanations.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name, _summary in COMMANDS:
        module = importlib.import_module(module_name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
