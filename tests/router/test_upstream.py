"""router.upstream: retries on other replicas, fallback chains, retry budgets, timeouts."""

from __future__ import annotations

import asyncio

from tests.router.support.fakes import (
    AUTH,
    FakePod,
    b64,
    running_router,
    standard_fakes,
    two_replica_fakes,
)

PIN_V2 = {**AUTH, "X-ServeStack-Arm": "face=v2"}


HASH = {"modality": "face", "images": [b64(b"img")]}


async def test_failed_try_is_retried_on_the_other_replica(tmp_path):
    fakes, policy = two_replica_fakes("fail")
    async with running_router(tmp_path, fakes, policy) as router:
        bad, good = fakes.pods["http://face-v2a:8080"], fakes.pods["http://face-v2b:8080"]
        # The balancer's first pick is random: send until the bad replica has failed 3 times (a flat
        # 6 requests left it under 3 about 1 run in 3), then 4 more that it must not see.
        async def send() -> None:
            r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
            assert r.status_code == 200 and r.json()["backend"] == "hasher-face-v2" and r.json()["fallbacks"] == []

        sent = 0
        while bad.calls < 3 and sent < 60:
            await send()
            sent += 1
        for _ in range(4):
            await send()
        assert good.calls == sent + 4
        # After 3 consecutive failures the bad replica is ejected and receives nothing more.
        assert bad.calls == 3
        assert router.metric("servestack_router_ejections_total", backend="hasher-face-v2") == 1
        assert router.metric("servestack_router_retries_total", backend="hasher-face-v2") == 3
        assert router.metric("servestack_router_upstream_requests_total", route="face", arm="v2",
                             backend="hasher-face-v2", outcome="error") == 3


async def test_fallback_chain_then_503_naming_what_was_tried(tmp_path):
    fakes, policy = two_replica_fakes("fail")
    fakes.pods["http://face-v2b:8080"].mode = "fail"
    async with running_router(tmp_path, fakes, policy) as router:
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        body = r.json()
        assert r.status_code == 200 and body["backend"] == "hasher-face-v1" and body["model_version"] == "1"
        assert body["fallbacks"] == ["hasher-face-v2"]
        assert router.metric("servestack_router_fallbacks_total", route="face", from_backend="hasher-face-v2",
                             to_backend="hasher-face-v1") == 1
        fakes.pods["http://face-v1a:8080"].mode = "fail"
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        err = r.json()["error"]
        assert err["code"] == "upstream_unavailable"
        assert "hasher-face-v2" in err["message"] and "hasher-face-v1" in err["message"]


async def test_unreachable_replica_and_rejected_input(tmp_path):
    fakes, policy = two_replica_fakes()
    policy["backends"]["hasher-face-v2"]["endpoints"] = ["http://gone:8080", "http://face-v2b:8080"]
    async with running_router(tmp_path, fakes, policy) as router:
        for _ in range(4):
            assert (await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)).status_code == 200
        fakes.pods["http://face-v2b:8080"].mode = "reject"
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected"
        assert fakes.pods["http://face-v2b:8080"].calls == 5  # a rejection is not retried elsewhere


async def test_retry_budget_stops_retries_in_an_outage(tmp_path):
    fakes, policy = two_replica_fakes("fail")
    fakes.pods["http://face-v2b:8080"].mode = "fail"
    policy["backends"]["hasher-face-v2"]["fallback"] = []
    async with running_router(tmp_path, fakes, policy, retry_budget_ratio=0.0, retry_budget_min_per_s=0.2,
                              retry_budget_window_s=10, outlier_consecutive_failures=1000) as router:
        statuses = [(await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)).status_code for _ in range(5)]
        assert statuses == [503] * 5
        # Budget: 0.2/s * 10 s = 2 retries in the window, whatever the number of requests.
        assert router.metric("servestack_router_retries_total", backend="hasher-face-v2") == 2
        # Request 1 spends both (its second retry goes back to a replica already tried), requests 2-5 find none.
        assert router.metric("servestack_router_retry_budget_exhausted_total", backend="hasher-face-v2") == 4
        calls = fakes.pods["http://face-v2a:8080"].calls + fakes.pods["http://face-v2b:8080"].calls
        assert calls == 5 + 2


async def test_per_try_timeout_moves_to_the_other_replica(tmp_path):
    fakes, policy = two_replica_fakes()
    gate = asyncio.Event()  # never set: the first replica hangs
    fakes.pods["http://face-v2a:8080"] = FakePod("face", "2", mode="hang", gate=gate)
    async with running_router(tmp_path, fakes, policy, upstream_try_timeout_s=0.2) as router:
        # Until the balancer's random pick lands on the hanging replica (it used to be 3 requests
        # flat, which missed it 1 run in 8 and failed).
        sent = 0
        while fakes.pods["http://face-v2a:8080"].calls == 0 and sent < 20:
            r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
            sent += 1
            assert r.status_code == 200 and r.json()["backend"] == "hasher-face-v2"
        timeouts = router.metric("servestack_router_upstream_requests_total", route="face", arm="v2",
                                 backend="hasher-face-v2", outcome="timeout")
        # The timed-out try went to the other replica, never back to the hanging one.
        assert timeouts == 1 and fakes.pods["http://face-v2a:8080"].calls == 1
        assert fakes.pods["http://face-v2b:8080"].calls == sent
        gate.set()


async def test_one_replica_backend_retries_a_transient_failure_on_that_replica(tmp_path):
    fakes = standard_fakes()
    v1, v2 = fakes.pods["http://face-v1a:8080"], fakes.pods["http://face-v2a:8080"]
    v2.fail_next = 1  # one 503, then healthy again
    async with running_router(tmp_path, fakes) as router:
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        body = r.json()
        assert r.status_code == 200 and body["backend"] == "hasher-face-v2" and body["fallbacks"] == []
        assert (v2.calls, v1.calls) == (2, 0)
        assert router.metric("servestack_router_retries_total", backend="hasher-face-v2") == 1
        assert router.metric("servestack_router_fallbacks_total", route="face", from_backend="hasher-face-v2",
                             to_backend="hasher-face-v1") == 0


async def test_one_replica_retries_are_bounded_then_ejection_sends_traffic_to_the_fallback(tmp_path):
    fakes = standard_fakes()
    v1, v2 = fakes.pods["http://face-v1a:8080"], fakes.pods["http://face-v2a:8080"]
    v2.mode = "fail"
    async with running_router(tmp_path, fakes) as router:  # max_retries 2, ejection after 3 failures
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        assert r.status_code == 200 and r.json()["fallbacks"] == ["hasher-face-v2"]
        assert (v2.calls, v1.calls) == (3, 1)
        assert router.metric("servestack_router_retries_total", backend="hasher-face-v2") == 2
        assert router.metric("servestack_router_ejections_total", backend="hasher-face-v2") == 1
        # Ejected: later requests go straight to the fallback, with no try on the ejected replica.
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        assert r.status_code == 200 and r.json()["backend"] == "hasher-face-v1"
        assert (v2.calls, v1.calls) == (3, 2)


async def test_one_replica_timeout_is_not_retried_on_the_same_replica(tmp_path):
    fakes = standard_fakes()
    gate = asyncio.Event()  # never set while the request runs: the only v2 replica hangs
    fakes.pods["http://face-v2a:8080"] = hanging = FakePod("face", "2", mode="hang", gate=gate)
    async with running_router(tmp_path, fakes, upstream_try_timeout_s=0.2) as router:
        r = await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)
        assert r.status_code == 200 and r.json()["fallbacks"] == ["hasher-face-v2"]
        assert hanging.calls == 1 and fakes.pods["http://face-v1a:8080"].calls == 1
        assert router.metric("servestack_router_retries_total", backend="hasher-face-v2") == 0
        gate.set()


async def test_fallbacks_after_failed_tries_draw_on_the_fallbacks_retry_budget(tmp_path):
    fakes = standard_fakes()
    fakes.pods["http://face-v2a:8080"].mode = "fail"
    # v2 fails every try and is never ejected; v1's budget: 0.2/s * 10 s = 2 retries in the window.
    async with running_router(tmp_path, fakes, max_retries=0, outlier_consecutive_failures=1000,
                              retry_budget_ratio=0.0, retry_budget_min_per_s=0.2, retry_budget_window_s=10) as router:
        responses = [await router.client.post("/v1/hash", headers=PIN_V2, json=HASH) for _ in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 503, 503, 503]
        assert "hasher-face-v1 (retry budget exhausted" in responses[-1].json()["error"]["message"]
        assert fakes.pods["http://face-v1a:8080"].calls == 2 and fakes.pods["http://face-v2a:8080"].calls == 5
        assert router.metric("servestack_router_retry_budget_exhausted_total", backend="hasher-face-v1") == 3
        assert router.metric("servestack_router_fallbacks_total", route="face", from_backend="hasher-face-v2",
                             to_backend="hasher-face-v1") == 2
        # v1's own traffic is not refused: a first try never needs budget.
        r = await router.client.post("/v1/hash", headers={**AUTH, "X-ServeStack-Arm": "face=v1"}, json=HASH)
        assert r.status_code == 200


async def test_fallback_from_an_ejected_backend_draws_no_budget(tmp_path):
    fakes = standard_fakes()
    fakes.pods["http://face-v2a:8080"].mode = "fail"
    # One failure ejects v2 (so no retry on it); v1's budget holds a single retry.
    async with running_router(tmp_path, fakes, outlier_consecutive_failures=1, retry_budget_ratio=0.0,
                              retry_budget_min_per_s=0.1, retry_budget_window_s=10) as router:
        statuses = [(await router.client.post("/v1/hash", headers=PIN_V2, json=HASH)).status_code for _ in range(5)]
        # Request 1 failed on v2 and spent v1's one retry; 2-5 made no try on v2: first calls, free.
        assert statuses == [200] * 5
        assert fakes.pods["http://face-v2a:8080"].calls == 1 and fakes.pods["http://face-v1a:8080"].calls == 5
        assert router.metric("servestack_router_retry_budget_exhausted_total", backend="hasher-face-v1") == 0
        assert router.metric("servestack_router_ejections_total", backend="hasher-face-v2") == 1


async def test_a_pod_restart_drops_pooled_connections_and_no_request_fails(tmp_path):
    """The pod goes away with keep-alive connections pooled in the router, then comes back on its
    port: calls meanwhile go to the other replica; afterwards the stale pooled connections are
    detected and replaced, not surfaced as errors."""
    fakes, policy = two_replica_fakes()
    async with running_router(tmp_path, fakes, policy, outlier_base_ejection_s=0.05,
                              outlier_max_ejection_s=0.05) as router:
        async def burst(n: int) -> None:
            rs = await asyncio.gather(*(router.client.post("/v1/hash", headers=PIN_V2, json=HASH) for _ in range(n)))
            assert [r.status_code for r in rs] == [200] * n, [r.text for r in rs if r.status_code != 200]

        await burst(8)
        first = fakes.pods["http://face-v2a:8080"]
        assert first.calls > 0
        await fakes.take_down("http://face-v2a:8080")
        calls_when_down = first.calls
        await burst(8)
        assert first.calls == calls_when_down
        await fakes.bring_up("http://face-v2a:8080")
        await asyncio.sleep(0.1)  # past the ejection
        for _ in range(6):
            await burst(4)
        assert first.calls > calls_when_down
