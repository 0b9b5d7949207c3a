"""Fixtures for the tracing tests: a real OTLP/HTTP receiver (oteltap) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.observability.otlp_sink import OtlpSink


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    """A fresh receiver per test (it starts in milliseconds), stopped afterwards."""
    with OtlpSink() as s:
        yield s
