"""The OTLP/HTTP span exporter every process uses: the official one with a faster encoder.

Retries with backoff, compression, headers, TLS and timeouts stay the official exporter's
(``opentelemetry-exporter-otlp-proto-http``); the protobuf encoding is replaced by
``tracing.otlp_encode`` (same bytes on the wire, a fraction of the CPU per span; BENCHMARKS.md).
The hook is the exporter's HTTP client (``_client.export(bytes)``, opentelemetry-python >= 1.45),
a private name with no public equivalent: ``tests/tracing/test_otel_private_names.py`` fails by
name when a release drops it, and where one lacks it at run time the exporter says so once and
exports through the official encoder. The HTTP transport is the exporter's own, as built.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from tracing.otlp_encode import encode_request

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # the official exporter's default cap


class FastOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same arguments) whose batches are encoded by ``tracing.otlp_encode``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = callable(getattr(getattr(self, "_client", None), "export", None))
        if not self.fast:
            log.warning("this opentelemetry-exporter-otlp-proto-http has no _client.export; "
                        "spans are encoded by the official (slower) encoder")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.fast or getattr(self, "_shutdown", False):
            return super().export(spans)
        data = encode_request(spans)
        limit = getattr(self, "_max_request_size", _MAX_REQUEST_BYTES)
        if 0 < limit < len(data):
            log.warning("dropping a batch of %d spans: %d bytes exceeds the %d-byte request cap",
                        len(spans), len(data), limit)
            return SpanExportResult.FAILURE
        # The client retries transient failures and logs the final one itself.
        return SpanExportResult.SUCCESS if self._client.export(data).success else SpanExportResult.FAILURE
