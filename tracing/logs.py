"""Structured JSON logs carrying the current trace_id and span_id."""

from __future__ import annotations

import json
import logging
import sys
import time

from tracing.propagation import current_ids

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, msg, trace_id, span_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = current_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def configure_json_logging(service: str, level: str | int = "INFO") -> None:
    """Route the root logger (and uvicorn's) to stderr as JSON lines. Call once per process.

    Args:
        service: the ``service`` field of every line, e.g. ``servestack-router``.
        level: a level name in any case (settings say ``info`` like uvicorn does) or number.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # logging accepts only upper-case names; "info" from a settings file would raise here.
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access logs at INFO on every request cost ~10% throughput; keep them at WARNING.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every outgoing request at INFO: one line per hasher call and health probe, which
    # on the router costs as much CPU as the proxying itself. Our own spans and metrics cover it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
