"""TraceMiddleware + inject_headers: one trace across two in-process apps, exported to a real receiver.

App "router" calls app "hasher" through httpx with ``inject_headers``; each app has its own
Telemetry (its own provider and exporter), as separate processes would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from opentelemetry.trace import SpanKind

from tests.observability.otlp_sink import OtlpSink, one
from tracing import Telemetry, TraceMiddleware, TracingSettings, current_ids, inject_headers, setup_telemetry, traced

HEX32 = "0123456789abcdef"


@dataclass
class Pair:
    router: httpx.AsyncClient
    router_tel: Telemetry
    hasher_tel: Telemetry


def _hasher_app(tel: Telemetry) -> TraceMiddleware:
    app = FastAPI()

    @app.post("/v1/hash")
    async def hash_(request: Request) -> dict[str, object]:
        with traced(tel.tracer, "hasher.preprocess", {"servestack.images": 1}):
            pass
        return {"codes": ["00"], "ids": current_ids()}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return TraceMiddleware(app, tel.tracer)


def _router_app(tel: Telemetry, hasher: httpx.AsyncClient) -> TraceMiddleware:
    app = FastAPI()

    @app.post("/v1/verify")
    async def verify() -> dict[str, object]:
        with traced(tel.tracer, "upstream hasher-face-v1", {"servestack.attempt": 1}, kind=SpanKind.CLIENT):
            r = await hasher.post("/v1/hash", json={}, headers=inject_headers({"x-other": "1"}), timeout=5)
        ids = current_ids()
        return {"trace_id": ids[0] if ids else None, "hasher": r.json()}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("# no metrics\n")

    return TraceMiddleware(app, tel.tracer)


def _telemetry(name: str, sink: OtlpSink, ratio: float = 1.0) -> Telemetry:
    settings = TracingSettings(endpoint=sink.traces_url, sample_ratio=ratio, schedule_delay_ms=20)
    return setup_telemetry(name, "0.1.0", settings)


async def _pair(sink: OtlpSink, ratio: float = 1.0) -> AsyncIterator[Pair]:
    router_tel, hasher_tel = _telemetry("servestack-router", sink, ratio), _telemetry("servestack-hasher", sink)
    hasher_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=_hasher_app(hasher_tel)), base_url="http://hasher")
    router_app = _router_app(router_tel, hasher_http)
    # raise_app_exceptions=False: the /boom test wants the 500 the server would send.
    transport = httpx.ASGITransport(app=router_app, raise_app_exceptions=False)
    async with hasher_http, httpx.AsyncClient(transport=transport, base_url="http://router") as router:
        yield Pair(router, router_tel, hasher_tel)
    router_tel.shutdown()
    hasher_tel.shutdown()


@pytest.fixture
async def pair(sink: OtlpSink) -> AsyncIterator[Pair]:
    async for p in _pair(sink):
        yield p


async def test_one_trace_across_two_apps_with_correct_parents(pair: Pair, sink: OtlpSink) -> None:
    r = await pair.router.post("/v1/verify")
    assert r.status_code == 200
    tid = r.headers["x-trace-id"]
    assert len(tid) == 32 and set(tid) <= set(HEX32) and tid != "0" * 32
    body = r.json()
    assert body["trace_id"] == tid and body["hasher"]["ids"][0] == tid

    spans = sink.trace(tid, until=lambda s: len(s) == 4, timeout_s=5)
    router_server = one(spans, "POST /v1/verify")
    client = one(spans, "upstream hasher-face-v1")
    hasher_server = one(spans, "POST /v1/hash")
    step = one(spans, "hasher.preprocess")
    assert router_server.parent_span_id is None and router_server.kind == "SERVER"
    assert router_server.attributes["http.route"] == "/v1/verify"
    assert router_server.attributes["http.response.status_code"] == 200
    assert (client.parent_span_id, client.kind) == (router_server.span_id, "CLIENT")
    # The hasher's server span hangs under the router's client span, across the (HTTP) boundary.
    assert hasher_server.parent_span_id == client.span_id and hasher_server.remote_parent is True
    assert hasher_server.kind == "SERVER"
    assert step.parent_span_id == hasher_server.span_id and step.attributes == {"servestack.images": 1}
    assert body["hasher"]["ids"][1] == hasher_server.span_id  # current_ids() inside the handler
    # The response's traceparent names the router's server span: a client can link to it.
    assert r.headers["traceparent"] == f"00-{tid}-{router_server.span_id}-01"


async def test_incoming_traceparent_is_the_parent(pair: Pair, sink: OtlpSink) -> None:
    tid, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = await pair.router.get("/items/7", headers={"traceparent": f"00-{tid}-{caller}-01"})
    assert r.status_code == 200 and r.headers["x-trace-id"] == tid
    (span,) = sink.trace(tid, timeout_s=5)
    assert (span.parent_span_id, span.remote_parent) == (caller, True)
    # Named after the route template, not the URL: one operation in Jaeger for every item id.
    assert span.name == "GET /items/{item_id}" and span.attributes["url.path"] == "/items/7"


async def test_unmatched_paths_and_errors(pair: Pair, sink: OtlpSink) -> None:
    missing = await pair.router.get("/no/such/path/123")
    boom = await pair.router.get("/boom")
    assert (missing.status_code, boom.status_code) == (404, 500)
    (m,) = sink.trace(missing.headers["x-trace-id"], timeout_s=5)
    assert m.name == "GET" and m.attributes["http.response.status_code"] == 404 and m.status == "UNSET"
    (b,) = sink.trace(boom.headers["x-trace-id"], timeout_s=5)
    assert b.name == "GET /boom" and b.status == "ERROR" and b.attributes["http.response.status_code"] == 500
    assert "exception" in b.events


async def test_probe_and_scrape_paths_are_not_traced(pair: Pair, sink: OtlpSink) -> None:
    for path in ("/healthz", "/metrics"):
        r = await pair.router.get(path)
        assert r.status_code == 200 and "x-trace-id" not in r.headers and "traceparent" not in r.headers
    marker = await pair.router.get("/items/1")
    spans = sink.wait_for(lambda s: any(x.trace_id == marker.headers["x-trace-id"] for x in s), timeout_s=5)
    # The marker went through the same exporter after the probes: had they been traced, they'd be here.
    assert [s.name for s in spans] == ["GET /items/{item_id}"]


async def test_unsampled_requests_still_get_a_trace_id(sink: OtlpSink) -> None:
    async for p in _pair(sink, ratio=0.0):
        r = await p.router.post("/v1/verify")
        tid = r.headers["x-trace-id"]
        assert r.json()["trace_id"] == tid and tid != "0" * 32
        assert r.headers["traceparent"].startswith(f"00-{tid}-") and r.headers["traceparent"].endswith("-00")
        # The hasher saw the same trace id (unsampled flag propagated) and exported nothing either.
        assert r.json()["hasher"]["ids"][0] == tid
        assert p.router_tel.provider.force_flush() and p.hasher_tel.provider.force_flush()
    assert sink.spans() == []


def test_inject_headers_outside_a_span_adds_nothing() -> None:
    assert dict(inject_headers()) == {}
    assert current_ids() is None
