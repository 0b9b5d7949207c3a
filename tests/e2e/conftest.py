"""Whole-stack fixtures: one `servestack up` on free ports for the whole test session.

The stack shares the artifact cache with `make run` (`.servestack/cache` in the repo), so
weights, engines and the converted LLM are built once per machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servestack.stackfile import StackInfo
from tests.e2e.otlp_fixtures import otlp_endpoint, otlp_receiver  # noqa: F401  (the stack exports to it)
from tests.support.stack import running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp_endpoint: str | None) -> Iterator[StackInfo]:  # noqa: F811
    with running_stack(tmp_path_factory.mktemp("stack"), otlp_endpoint) as info:
        yield info
