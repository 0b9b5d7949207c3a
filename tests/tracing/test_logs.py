"""configure_json_logging: one JSON object per line carrying the current trace_id / span_id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tracing import TracingSettings, configure_json_logging, setup_telemetry

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_json_logging rewires process-wide loggers: put them back for the next test."""
    loggers = {n: logging.getLogger(n) for n in _LOGGERS}
    saved = {n: (lg.handlers[:], lg.level, lg.propagate) for n, lg in loggers.items()}
    yield
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_lines_carry_trace_and_span_ids(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_json_logging("servestack-router", "info")  # lower-case, as settings files write it
    tel = setup_telemetry("servestack-router", "1", TracingSettings(sample_ratio=0.0))
    log = logging.getLogger("router.flow")
    log.info("outside")
    with tel.tracer.start_as_current_span("verify") as span:
        log.warning("decided %s", "accept", extra={"arm": "v2", "latency_ms": 3.5, "obj": object()})
    log.debug("hidden at info level")
    outside, inside = _lines(capsys.readouterr().err)
    ctx = span.get_span_context()
    assert "trace_id" not in outside and outside["msg"] == "outside" and outside["level"] == "info"
    # Unsampled (ratio 0) spans still have ids: logs and audit records join the client's x-trace-id.
    assert inside["trace_id"] == format(ctx.trace_id, "032x") and inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["service"] == "servestack-router" and inside["logger"] == "router.flow"
    assert inside["msg"] == "decided accept" and inside["level"] == "warning"
    assert inside["arm"] == "v2" and inside["latency_ms"] == 3.5 and inside["obj"].startswith("<object")
    assert str(inside["ts"]).endswith("Z")


def test_exceptions_and_uvicorn_loggers(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_json_logging("servestack-hasher", logging.INFO)
    try:
        raise RuntimeError("engine died")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("request failed")
    logging.getLogger("uvicorn.access").info("GET / 200")  # kept at WARNING: access logs cost throughput
    (line,) = _lines(capsys.readouterr().err)
    assert line["logger"] == "uvicorn.error" and line["level"] == "error"
    assert "RuntimeError: engine died" in str(line["exc"])
