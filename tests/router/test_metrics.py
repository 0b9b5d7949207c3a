"""router.metrics: the Prometheus names of the interface, counted per route template."""

from __future__ import annotations

from tests.router.support.fakes import AUTH, b64


async def test_metrics_use_the_interface_names(router):
    await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": "m", "face": b64(b"m")})
    await router.client.post("/v1/verify", headers=AUTH, json={"subject_id": "m", "face": b64(b"m")})
    text = (await router.client.get("/metrics")).text
    for name in ("servestack_router_http_requests_total", "servestack_router_http_request_duration_seconds_bucket",
                 "servestack_router_upstream_requests_total", "servestack_router_upstream_duration_seconds_bucket",
                 "servestack_router_inflight_requests", "servestack_router_decisions_total",
                 "servestack_router_policy_weight", "servestack_router_spans_dropped_total"):
        assert name in text, name
    assert router.metric("servestack_router_http_requests_total", method="POST", path="/v1/verify",
                         status="200") == 1
    assert router.metric("servestack_router_inflight_requests", backend="hasher-face-v1") == 0
