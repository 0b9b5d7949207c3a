"""Whole-stack fixtures: one `servestack up` on free ports for the whole test session.

The stack shares the artifact cache with `make run` (`.servestack/cache` in the repo), so
weights, engines and the converted LLM are built once per machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from servestack.background import StackStartError, start_stack, stop_stack
from servestack.stackfile import StackInfo
from tests.e2e.otlp_fixtures import otlp_endpoint, otlp_receiver  # noqa: F401  (the stack exports to it)

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".servestack" / "cache"
START_TIMEOUT_S = float(os.environ.get("SERVESTACK_TEST_START_TIMEOUT_S", "1200"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp_endpoint: str | None) -> Iterator[StackInfo]:  # noqa: F811
    state_dir = tmp_path_factory.mktemp("stack")
    extra = ["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []
    try:
        proc, info = start_stack(state_dir, *extra, cache_dir=CACHE_DIR, timeout_s=START_TIMEOUT_S, cwd=REPO)
    except StackStartError as exc:
        pytest.fail(str(exc))
    try:
        yield info
    finally:
        stop_stack(proc)
