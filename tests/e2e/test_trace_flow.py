"""One verify + explanation flow through the real processes is ONE trace with the right parents.

A traced client (this test) opens a span and sends POST /v1/verify and then
GET /v1/audit/{id}/explanation with its traceparent, as a UI backend would; every process of the
`stack` fixture exports over OTLP/HTTP to the session's ``otlp_receiver`` (tests/e2e/otlp_fixtures.py).
The trace must hold: router (server span with the key name and the arm choices, upstream calls,
audit write), each hasher
pod's server span under the router's client span, the hasher request span with its batch id and
size, the batch span linking to it, and the explainer's server, prompt, generation and grounding
spans under the router's explain call. Spans are matched by name and structure (OTLP as oteltap
hands it over carries no resource per span).

It runs twice: on the session's stack (tracing.lean's tracer, tracing.otlp_encode's encoder) and on
a stack of its own started with the escape hatches, ``SERVESTACK_TRACER=sdk`` and
``SERVESTACK_OTLP_ENCODER=official`` (the SDK's tracer and the exporter's own encoding), so that
both keep producing the same trace.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.trace import SpanKind

from servestack.samples import write_samples
from servestack.stackfile import StackInfo
from tests.observability.otlp_sink import CapturedSpan, OtlpSink, by_name, one
from tests.support.stack import running_stack
from tracing import TracingSettings, inject_headers, setup_telemetry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SUBJECT = "trace-flow-subject"
HASHER_PATHS = re.compile(r"^/v1/hash$|^/v2/models/")


STOCK_SDK = {"SERVESTACK_TRACER": "sdk", "SERVESTACK_OTLP_ENCODER": "official"}


# The stock-SDK stack first: it is stopped before the session's stack starts, so that two stacks
# never run at once.
@pytest.fixture(params=["stock-sdk", "lean"])
def traced_stack(request: pytest.FixtureRequest, otlp_endpoint: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The session's stack (lean tracer, fast encoder), or one of its own with the SDK's tracer and
    the official encoder, exporting to the same receiver."""
    if request.param == "lean":
        yield request.getfixturevalue("stack")
        return
    with running_stack(tmp_path_factory.mktemp("stack-stock-sdk"), otlp_endpoint, env=STOCK_SDK) as info:
        yield info


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _attr(span: CapturedSpan, *suffixes: str) -> object:
    """The value of the attribute whose key ends with one of ``suffixes`` (batch.id / batch_id)."""
    for key, value in span.attributes.items():
        if key.endswith(suffixes):
            return value
    return None


class Tree:
    """Parent/child index over one trace's spans."""

    def __init__(self, spans: Sequence[CapturedSpan]) -> None:
        self.spans = list(spans)
        self.by_id = {s.span_id: s for s in spans}

    def ancestors(self, span: CapturedSpan) -> list[CapturedSpan]:
        out = []
        while span.parent_span_id and span.parent_span_id in self.by_id:
            span = self.by_id[span.parent_span_id]
            out.append(span)
        return out

    def under(self, root: CapturedSpan, name: str | None = None) -> list[CapturedSpan]:
        """Descendants of ``root`` (optionally only those called ``name``)."""
        return [s for s in self.spans if root in self.ancestors(s) and (name is None or s.name == name)]


def _complete(spans: Sequence[CapturedSpan]) -> bool:
    names = [s.name for s in spans]
    hasher_servers = [
        s for s in spans if s.kind == "SERVER" and HASHER_PATHS.match(str(s.attributes.get("url.path")))
    ]
    return (
        "POST /v1/verify" in names
        and "GET /v1/audit/{audit_id}/explanation" in names
        and len(hasher_servers) >= 2  # face and fingerprint
        and "explain.prompt_build" in names
        and "explain.generation" in names
        and "explain.grounding_check" in names
        and "audit.write" in names
        # The explainer's server span ends after its children (the stream closes last), so it can
        # reach the receiver in a later export batch than generation and grounding.
        and any(s.kind == "SERVER" and s.attributes.get("url.path") == "/v1/explain" for s in spans)
    )


def test_verify_and_explanation_form_one_trace(traced_stack: StackInfo, otlp_receiver: OtlpSink,
                                               tmp_path: Path) -> None:
    stack = traced_stack
    samples = write_samples(tmp_path)
    images = {"face": _b64(samples["face"]), "fingerprint": _b64(samples["fingerprint"])}
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    client_tel = setup_telemetry("servestack-e2e-client", "0", TracingSettings(endpoint=otlp_receiver.traces_url))
    with httpx.Client(base_url=stack.services["router"], timeout=300) as http:
        enrolled = http.post("/v1/enroll", json={"subject_id": SUBJECT, **images}, headers=auth)
        assert enrolled.status_code == 200, enrolled.text
        with client_tel.tracer.start_as_current_span("client verify+explain", kind=SpanKind.CLIENT) as root:
            body = {"subject_id": SUBJECT, **images}
            verified = http.post("/v1/verify", json=body, headers=inject_headers(dict(auth)))
            assert verified.status_code == 200, verified.text
            record = verified.json()
            explained = http.get(f"/v1/audit/{record['audit_id']}/explanation", headers=inject_headers(dict(auth)))
            assert explained.status_code == 200, explained.text
    assert client_tel.shutdown()

    tid = format(root.get_span_context().trace_id, "032x")
    # The trace id reaches the client (header and body) and the audit record.
    assert verified.headers["x-trace-id"] == record["trace_id"] == tid
    assert explained.headers["x-trace-id"] == tid
    assert http_get_audit(stack, record["audit_id"], auth)["trace_id"] == tid

    try:
        spans = otlp_receiver.trace(tid, until=_complete, timeout_s=60)
    except TimeoutError as exc:
        if not otlp_receiver.spans():
            pytest.fail(
                "no spans at all reached the receiver: tests/e2e/conftest.py must take otlp_endpoint from "
                f"tests/e2e/otlp_fixtures.py so that `servestack up` gets --otlp-endpoint ({exc})"
            )
        raise
    t = Tree(spans)
    client_root = one(spans, "client verify+explain")
    assert client_root.parent_span_id is None

    # Router: both requests hang under the client's span, across the process boundary.
    verify = one(spans, "POST /v1/verify")
    explanation = one(spans, "GET /v1/audit/{audit_id}/explanation")
    for server in (verify, explanation):
        assert (server.parent_span_id, server.remote_parent, server.kind) == (client_root.span_id, True, "SERVER")
        assert server.attributes["http.response.status_code"] == 200
    assert verify.attributes["servestack.key_name"], "auth names the key on the server span"
    # The arm choice is an event of the server span (one per modality), the replica pick the
    # upstream call's server.address: decisions of microseconds are no spans.
    assert verify.events.count("feature_flag.evaluation") == 2
    upstream = t.under(verify, "upstream.hash")
    assert {u.attributes["servestack.route"] for u in upstream} == {"face", "fingerprint"}
    assert {m["arm"] for m in record["modalities"]} <= {u.attributes["servestack.arm"] for u in upstream}
    assert all(str(u.attributes["server.address"]).startswith("http") for u in upstream)
    (audit,) = t.under(verify, "audit.write")
    assert audit.attributes["servestack.audit_id"] == record["audit_id"]

    # Hashers: each pod's server span is the child of one router upstream call of this request.
    calls = {s.span_id: s for s in t.under(verify) if s.kind == "CLIENT"}
    hasher_servers = [
        s for s in t.under(verify) if s.kind == "SERVER" and HASHER_PATHS.match(str(s.attributes["url.path"]))
    ]
    assert len(hasher_servers) >= len(record["modalities"]) == 2
    for server in hasher_servers:
        assert server.parent_span_id in calls and server.remote_parent is True, server
        assert calls[server.parent_span_id].name == "upstream.hash"
    # The request span inside a hasher pod records its batch; the batch span links back to it.
    # The request span is the pod's server span itself (or a span under it).
    request_spans = [
        s for server in hasher_servers for s in (server, *t.under(server))
        if _attr(s, "batch.id", "batch_id") is not None
    ]
    assert len(request_spans) >= 2, [s.name for server in hasher_servers for s in t.under(server)]
    for req in request_spans:
        batch_id, batch_size = _attr(req, "batch.id", "batch_id"), _attr(req, "batch.size", "batch_size")
        assert isinstance(batch_size, int) and batch_size >= 1
        batches = otlp_receiver.wait_for(
            lambda all_, r=req: any((r.trace_id, r.span_id) == ln[:2] for s in all_ for ln in s.links), timeout_s=30
        )
        (batch,) = [s for s in batches if any((req.trace_id, req.span_id) == ln[:2] for ln in s.links)]
        assert _attr(batch, "batch.id", "batch_id") == batch_id
        assert _attr(batch, "batch.size", "batch_size") == batch_size
        assert 1 <= len(batch.links) <= batch_size  # one link per request it served

    # Explainer: under the router's explain call, prompt -> generation -> grounding check.
    (explain_call,) = [s for s in t.under(explanation) if s.kind == "CLIENT" and s.name.startswith("upstream.explain")]
    (explainer,) = [s for s in spans if s.parent_span_id == explain_call.span_id]
    assert explainer.kind == "SERVER" and explainer.remote_parent is True
    assert explainer.attributes["url.path"] == "/v1/explain"
    assert len(t.under(explainer, "explain.prompt_build")) == 1
    generation = t.under(explainer, "explain.generation")
    assert generation, "no generation span"
    first = generation[0]
    assert int(first.attributes["llm.prompt_tokens"]) > 0 and int(first.attributes["llm.generated_tokens"]) > 0
    assert float(first.attributes["llm.time_to_first_token_s"]) > 0
    assert t.under(explainer, "explain.grounding_check")

    # Every span is in this trace, and no attribute carries an image or the subject's id.
    assert {s.trace_id for s in spans} == {tid}
    needles = [images["face"][:64], images["fingerprint"][:64], SUBJECT]
    leaks = [(s.name, k) for s in spans for k, v in s.attributes.items() if any(n in str(v) for n in needles)]
    assert leaks == [], "personal data or images in span attributes"
    assert not by_name(spans, "balancer.pick") and not by_name(spans, "auth")


def http_get_audit(stack: StackInfo, audit_id: str, auth: dict[str, str]) -> dict[str, object]:
    r = httpx.get(f"{stack.services['router']}/v1/audit/{audit_id}", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())
