"""Session fixtures for whole-stack trace tests: a real OTLP/HTTP receiver (oteltap) on 127.0.0.1.

The OTLP endpoint must be known before `servestack up` starts, so the receiver is a session
fixture that the ``stack`` fixture depends on through ``otlp_endpoint``. Wiring (in
tests/e2e/conftest.py, replacing its placeholder ``otlp_endpoint`` that yields None):

    from tests.e2e.otlp_fixtures import otlp_endpoint, otlp_receiver  # noqa: F401  (fixtures)

The ``stack`` fixture then passes ``--otlp-endpoint http://127.0.0.1:<port>`` to `servestack up`
and every process exports its spans to this receiver. Import the fixtures in conftest.py only:
importing them again in a test module would create a second receiver the stack does not send to.
The receiver costs a few milliseconds and one thread, so it runs for every e2e session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.observability.otlp_sink import OtlpSink


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpSink]:
    """oteltap on 127.0.0.1:<free port>, keeping every span the stack's processes export."""
    with OtlpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def otlp_endpoint(otlp_receiver: OtlpSink) -> Iterator[str]:
    """The OTLP/HTTP base URL for `servestack up --otlp-endpoint` (the stack fixture reads it)."""
    yield otlp_receiver.endpoint
