"""Where each backend's replicas are: static URLs, DNS A records, or Kubernetes EndpointSlices.

:class:`Discovery` follows the policy: on every swap it starts, keeps or stops one source per
backend (a source whose spec did not change keeps running, so replica state survives reloads)
and each source pushes its URL set into the :class:`~router.balancer.Balancer`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from router.balancer import Balancer
from router.policy import EXPLAINER, BackendSpec, DnsSpec, EndpointSliceSpec, TrafficPolicy

log = logging.getLogger(__name__)


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


# --- EndpointSlices ------------------------------------------------------------------------------

def endpoints_from_slice(obj: dict[str, Any], port: int | None, scheme: str = "http") -> list[str]:
    """URLs of the ready endpoints of one EndpointSlice (the API's JSON form, camelCase keys).

    ``conditions.ready`` absent means ready (Kubernetes API convention); terminating endpoints
    are left out so that draining pods stop receiving new requests.
    """
    ports = obj.get("ports") or []
    chosen = port if port is not None else (ports[0].get("port") if ports else None)
    if chosen is None:
        return []
    urls = []
    for ep in obj.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        if cond.get("ready") is False or cond.get("terminating") is True:
            continue
        for addr in ep.get("addresses") or []:
            urls.append(f"{scheme}://{_host(addr)}:{chosen}")
    return urls


class SliceTracker:
    """The union of a Service's slices, kept current from list + watch events."""

    def __init__(self, spec: EndpointSliceSpec) -> None:
        self.spec = spec
        self.slices: dict[str, list[str]] = {}

    def reset(self, items: Iterable[dict[str, Any]]) -> None:
        self.slices = {
            it["metadata"]["name"]: endpoints_from_slice(it, self.spec.port, self.spec.scheme) for it in items
        }

    def apply(self, event_type: str, obj: dict[str, Any]) -> bool:
        """Apply one watch event; True if the URL set may have changed. ERROR events raise."""
        if event_type == "ERROR":
            raise WatchExpired(f"watch error: {obj.get('message', obj)}")
        name = (obj.get("metadata") or {}).get("name")
        if not name or event_type == "BOOKMARK":
            return False
        if event_type == "DELETED":
            return self.slices.pop(name, None) is not None
        self.slices[name] = endpoints_from_slice(obj, self.spec.port, self.spec.scheme)
        return True

    def urls(self) -> list[str]:
        return sorted({u for urls in self.slices.values() for u in urls})


class WatchExpired(Exception):
    """The watch must be restarted from a fresh list (e.g. 410 Gone: resourceVersion too old)."""


ListFn = Callable[[], tuple[list[dict[str, Any]], str]]
StreamFn = Callable[[str], Iterator[dict[str, Any]]]


def kubernetes_fns(spec: EndpointSliceSpec) -> tuple[ListFn, StreamFn]:
    """list/stream functions backed by the official ``kubernetes`` client (in-cluster or kubeconfig)."""
    from kubernetes import client, config, watch

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.DiscoveryV1Api()
    selector = f"kubernetes.io/service-name={spec.service}"

    def list_fn() -> tuple[list[dict[str, Any]], str]:
        resp = api.list_namespaced_endpoint_slice(spec.namespace, label_selector=selector)
        items = [api.api_client.sanitize_for_serialization(it) for it in resp.items]
        return items, resp.metadata.resource_version

    def stream_fn(resource_version: str) -> Iterator[dict[str, Any]]:
        w = watch.Watch()
        for ev in w.stream(api.list_namespaced_endpoint_slice, spec.namespace, label_selector=selector,
                           resource_version=resource_version, timeout_seconds=30):
            yield {"type": ev["type"], "object": ev["raw_object"]}

    return list_fn, stream_fn


class EndpointSliceSource:
    """List, then watch, in a thread (the client is blocking); re-list on expiry or error."""

    def __init__(self, backend: str, spec: EndpointSliceSpec, publish: Callable[[list[str]], None],
                 fns: tuple[ListFn, StreamFn] | None = None, retry_s: float = 2.0) -> None:
        self.backend = backend
        self.tracker = SliceTracker(spec)
        self._publish = publish
        self._fns = fns
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"eps-{backend}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self, list_fn: ListFn, stream_fn: StreamFn) -> None:
        """One list + watch cycle (returns when the watch ends or stop() was called)."""
        items, rv = list_fn()
        self.tracker.reset(items)
        self._publish(self.tracker.urls())
        for event in stream_fn(rv):
            if self._stop.is_set():
                return
            if self.tracker.apply(event["type"], event["object"]):
                self._publish(self.tracker.urls())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fns = self._fns or kubernetes_fns(self.tracker.spec)
                self.run_once(*fns)
            except WatchExpired as exc:
                log.info("endpointslice watch of %s restarts: %s", self.backend, exc)
            except Exception as exc:  # API down, RBAC, network: keep the last known replicas, retry
                log.warning("endpointslice watch of %s failed, retrying in %.0fs: %s", self.backend, self._retry_s, exc)
                self._stop.wait(self._retry_s)


# --- DNS -----------------------------------------------------------------------------------------

async def resolve_a(name: str, port: int) -> list[str]:
    """Every IPv4 address of ``name`` (a headless Service answers one A record per ready pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


class DnsSource:
    def __init__(self, backend: str, spec: DnsSpec, publish: Callable[[list[str]], None],
                 refresh_s: float, resolver: Callable[[str, int], Any] = resolve_a) -> None:
        self.backend, self.spec, self._publish = backend, spec, publish
        self._refresh_s, self._resolver = refresh_s, resolver
        self._task: asyncio.Task | None = None

    async def refresh(self) -> None:
        try:
            addrs = await self._resolver(self.spec.name, self.spec.port)
        except OSError as exc:  # keep the last known set: a DNS blip must not empty the pool
            log.warning("DNS lookup of %s for %s failed: %s", self.spec.name, self.backend, exc)
            return
        self._publish([f"{self.spec.scheme}://{_host(a)}:{self.spec.port}" for a in addrs])

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"dns-{self.backend}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


# --- the manager ---------------------------------------------------------------------------------

class Discovery:
    def __init__(self, balancer: Balancer, dns_refresh_s: float,
                 slice_fns: Callable[[EndpointSliceSpec], tuple[ListFn, StreamFn]] | None = None) -> None:
        self._balancer = balancer
        self._dns_refresh_s = dns_refresh_s
        self._slice_fns = slice_fns
        self._running: dict[str, tuple[BackendSpec, Any]] = {}

    def _publisher(self, backend: str, threaded: bool) -> Callable[[list[str]], None]:
        if not threaded:
            return lambda urls: self._balancer.set_endpoints(backend, urls)
        loop = asyncio.get_running_loop()
        return lambda urls: loop.call_soon_threadsafe(self._balancer.set_endpoints, backend, urls)

    def apply(self, policy: TrafficPolicy) -> None:
        """Reconcile sources with the policy's backends (and the explainer). Runs on the loop."""
        wanted = {name: spec for name, spec in policy.spec.backends.items()}
        if policy.spec.explainer is not None:
            wanted[EXPLAINER] = policy.spec.explainer
        for name in list(self._running):
            if name not in wanted:
                self._stop(name)
                self._balancer.remove(name)
        for name, spec in wanted.items():
            running = self._running.get(name)
            if running is not None and _same_source(running[0], spec):
                continue
            if running is not None:
                self._stop(name)
            self._running[name] = (spec, self._start(name, spec))

    def _start(self, name: str, spec: BackendSpec) -> Any:
        if spec.endpoints is not None:
            self._balancer.set_endpoints(name, spec.endpoints)
            return None
        if spec.dns is not None:
            src: Any = DnsSource(name, spec.dns, self._publisher(name, False), self._dns_refresh_s)
        else:
            assert spec.endpointslices is not None
            fns = self._slice_fns(spec.endpointslices) if self._slice_fns else None
            src = EndpointSliceSource(name, spec.endpointslices, self._publisher(name, True), fns)
        src.start()
        return src

    def _stop(self, name: str) -> None:
        _, src = self._running.pop(name)
        if src is not None:
            src.stop()

    def close(self) -> None:
        for name in list(self._running):
            self._stop(name)


def _same_source(a: BackendSpec, b: BackendSpec) -> bool:
    return (a.endpoints, a.dns, a.endpointslices) == (b.endpoints, b.dns, b.endpointslices)
