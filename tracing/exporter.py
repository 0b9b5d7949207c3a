"""The OTLP/HTTP span exporter every process uses: the official one with a faster encoder.

Retries with backoff, compression, headers, TLS and timeouts stay the official exporter's
(``opentelemetry-exporter-otlp-proto-http``); the protobuf encoding is replaced by
``tracing.otlp_encode`` (same bytes on the wire, a fraction of the CPU per span; BENCHMARKS.md).
The hook is the exporter's HTTP client (``_client.export(bytes)``, opentelemetry-python >= 1.45):
where a release lacks it, the exporter says so once and exports through the official encoder.
Where nothing depends on ``requests`` (``_use_urllib3_when_equivalent``), batches go through the
package's own urllib3 transport.
"""

from __future__ import annotations

import logging
import os
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
        elif kwargs.get("session") is None and len(args) < 8:  # no caller's session (8th argument)
            _use_urllib3_when_equivalent(self._client)

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


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def _use_urllib3_when_equivalent(client: Any) -> None:
    """Send batches through the exporter package's urllib3 transport instead of its requests one,
    where that changes nothing but the CPU: a plain-HTTP endpoint (the in-cluster collector), the
    default session, no proxy variable and no .netrc. ``requests`` reads those per POST (a
    ``.netrc`` lookup, proxy variables, cookie and hook handling); in the router, whose core the
    export shares, that was ~1 us of CPU per exported span. Anything else keeps ``requests``:
    proxies, .netrc credentials and its CA bundle for https endpoints behave as the official
    exporter's.
    """
    try:
        import requests
        from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
    except ImportError:  # a release without these modules: keep what the exporter built
        return
    transport = getattr(client, "_transport", None)
    session = getattr(transport, "_session", None)
    if type(transport) is not RequestsHTTPTransport or type(session) is not requests.Session:
        return
    if any("CREDENTIAL_PROVIDER" in name for name in os.environ):
        return  # a credential provider's session (OTEL_PYTHON_..._CREDENTIAL_PROVIDER): it may carry auth
    if not str(getattr(client, "_endpoint", "")).startswith("http://") or session.auth or session.proxies:
        return
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES):
        return
    netrc = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    if any(os.path.exists(os.path.expanduser(path)) for path in netrc):
        return
    client._transport = Urllib3HTTPTransport(verify=session.verify, cert=session.cert)
    session.close()
