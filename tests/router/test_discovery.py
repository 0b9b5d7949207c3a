"""EndpointSlice parsing and watch handling (fakes of the API), DNS refresh, discovery reconciliation."""

from __future__ import annotations

import asyncio

import pytest

from router.balancer import Balancer, RetryBudget
from router.discovery import (
    Discovery,
    DnsSource,
    EndpointSliceSource,
    SliceTracker,
    WatchExpired,
    endpoints_from_slice,
)
from router.policy import DnsSpec, EndpointSliceSpec, PolicySpec, TrafficPolicy
from tests.router.support.fakes import standard_policy


def slice_obj(name: str, eps: list[tuple[str, bool | None, bool | None]], port: int = 8080) -> dict:
    endpoints = []
    for addr, ready, terminating in eps:
        cond = {}
        if ready is not None:
            cond["ready"] = ready
        if terminating is not None:
            cond["terminating"] = terminating
        endpoints.append({"addresses": [addr], "conditions": cond})
    return {"metadata": {"name": name}, "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
            "endpoints": endpoints}


def test_endpoints_from_slice_keeps_ready_not_terminating():
    obj = slice_obj("s1", [("10.0.0.1", True, None), ("10.0.0.2", False, None), ("10.0.0.3", None, None),
                           ("10.0.0.4", True, True)])
    assert endpoints_from_slice(obj, None) == ["http://10.0.0.1:8080", "http://10.0.0.3:8080"]
    assert endpoints_from_slice(obj, 9000) == ["http://10.0.0.1:9000", "http://10.0.0.3:9000"]
    v6 = {"metadata": {"name": "v6"}, "ports": [{"port": 80}], "endpoints": [{"addresses": ["fd00::1"]}]}
    assert endpoints_from_slice(v6, None) == ["http://[fd00::1]:80"]
    assert endpoints_from_slice({"metadata": {"name": "x"}, "endpoints": []}, None) == []


def test_slice_tracker_applies_watch_events():
    t = SliceTracker(EndpointSliceSpec(service="svc", port=8080))
    t.reset([slice_obj("a", [("10.0.0.1", True, None)])])
    assert t.apply("ADDED", slice_obj("b", [("10.0.0.2", True, None)]))
    assert t.urls() == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    assert t.apply("MODIFIED", slice_obj("a", [("10.0.0.1", False, None)]))
    assert t.urls() == ["http://10.0.0.2:8080"]
    assert t.apply("DELETED", slice_obj("b", []))
    assert t.urls() == []
    assert not t.apply("BOOKMARK", {"metadata": {"name": "a", "resourceVersion": "9"}})
    with pytest.raises(WatchExpired):
        t.apply("ERROR", {"code": 410, "message": "too old resource version"})


def test_endpointslice_source_lists_then_follows_the_watch():
    published: list[list[str]] = []
    lists = iter([([slice_obj("a", [("10.0.0.1", True, None)])], "41")])
    rv_seen = []

    def list_fn():
        return next(lists)

    def stream_fn(rv):
        rv_seen.append(rv)
        yield {"type": "ADDED", "object": slice_obj("b", [("10.0.0.2", True, None)])}
        yield {"type": "DELETED", "object": slice_obj("a", [])}

    src = EndpointSliceSource("be", EndpointSliceSpec(service="svc"), published.append, (list_fn, stream_fn))
    src.run_once(list_fn, stream_fn)
    assert rv_seen == ["41"]
    assert published == [["http://10.0.0.1:8080"], ["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
                         ["http://10.0.0.2:8080"]]


async def test_discovery_runs_endpointslice_watch_in_a_thread_and_reconciles():
    balancer = Balancer(consecutive_failures=3, base_ejection_s=1, max_ejection_s=2,
                        budget_factory=lambda: RetryBudget(0.2, 1, 10))
    release = asyncio.Event()
    import threading

    stop_stream = threading.Event()

    def fns(spec):
        def list_fn():
            return [slice_obj("a", [("10.1.0.1", True, None)], port=spec.port or 8080)], "1"

        def stream_fn(rv):
            stop_stream.wait(5)
            return iter(())

        return list_fn, stream_fn

    data = standard_policy()
    data["backends"]["hasher-face-v2"] = {"endpointslices": {"service": "face-v2", "namespace": "ns", "port": 8080}}
    discovery = Discovery(balancer, dns_refresh_s=60, slice_fns=fns)
    discovery.apply(TrafficPolicy(PolicySpec.model_validate(data)))
    for _ in range(100):
        if balancer.pool("hasher-face-v2") and balancer.pool("hasher-face-v2").endpoints:
            break
        await asyncio.sleep(0.02)
    assert list(balancer.pool("hasher-face-v2").endpoints) == ["http://10.1.0.1:8080"]
    assert list(balancer.pool("hasher-face-v1").endpoints) == ["http://face-v1a:8080"]
    # Reconcile: hasher-face-v1 gets new static URLs, v2 removed from the policy altogether.
    data2 = standard_policy()
    data2["backends"]["hasher-face-v1"]["endpoints"] = ["http://face-v1b:8080"]
    data2["routes"]["face"]["arms"] = data2["routes"]["face"]["arms"][:1]
    data2["routes"]["face"].pop("shadow")
    del data2["backends"]["hasher-face-v2"]
    discovery.apply(TrafficPolicy(PolicySpec.model_validate(data2)))
    assert balancer.pool("hasher-face-v2") is None
    assert list(balancer.pool("hasher-face-v1").endpoints) == ["http://face-v1b:8080"]
    stop_stream.set()
    release.set()
    discovery.close()


async def test_dns_source_refreshes_and_keeps_last_set_on_failure():
    published: list[list[str]] = []
    answers = [["10.2.0.1", "10.2.0.2"], OSError("NXDOMAIN"), ["10.2.0.3"]]

    async def resolver(name, port):
        assert (name, port) == ("hasher.ns.svc", 8080)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    src = DnsSource("be", DnsSpec(name="hasher.ns.svc", port=8080), published.append, 60, resolver)
    for _ in range(3):
        await src.refresh()
    assert published == [["http://10.2.0.1:8080", "http://10.2.0.2:8080"], ["http://10.2.0.3:8080"]]
