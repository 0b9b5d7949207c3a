"""A whole `servestack up` for a test: started on free ports, stopped afterwards."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from servestack import loadtest_cmd
from servestack.background import StackStartError, start_stack, stop_stack
from servestack.stackfile import StackInfo
from tests.support.procs import REPO

CACHE_DIR = REPO / ".servestack" / "cache"  # shared with `make run`: artifacts are built once per machine
START_TIMEOUT_S = float(os.environ.get("SERVESTACK_TEST_START_TIMEOUT_S", "1200"))


@contextlib.contextmanager
def running_stack(state_dir: Path, otlp_endpoint: str | None = None,
                  env: Mapping[str, str] | None = None) -> Iterator[StackInfo]:
    """`servestack up` in ``state_dir`` exporting spans to ``otlp_endpoint`` (if any), with ``env``
    set for every service; a start that fails fails the test with the launcher's log."""
    extra = ["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []
    try:
        proc, info = start_stack(state_dir, *extra, cache_dir=CACHE_DIR, timeout_s=START_TIMEOUT_S, cwd=REPO,
                                 env=env)
    except StackStartError as exc:
        pytest.fail(str(exc))
    try:
        yield info
    finally:
        stop_stack(proc)


def run_loadtest(stack: StackInfo, out: Path, *args: str) -> tuple[int, dict]:
    """``servestack loadtest ARGS`` against ``stack``'s router, as its CLI runs it: (exit code, summary.json)."""
    parser = argparse.ArgumentParser(prog="servestack")
    loadtest_cmd.register(parser.add_subparsers())
    parsed = parser.parse_args(["loadtest", *args, "--host", stack.services["router"], "--api-key", stack.api_key,
                                "--out", str(out)])
    rc = parsed.func(parsed)
    return rc, json.loads((out / "summary.json").read_text())
