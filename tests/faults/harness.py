"""Real processes for the fault matrix: fake hasher pods, a fake explainer, a real router, a fault proxy.

- :class:`FaultProxy`: a TCP proxy in a thread of the test process, one per hasher replica, whose
  mode a test switches at run time: ``pass`` (forward both ways), ``delay`` (hold every chunk
  from the client for ``delay_s`` before forwarding it: each request answered that much later),
  ``blackhole`` (accept connections, read what comes, never answer, never close).
- :func:`start_router`: ``python -m router`` on a free port with the test's policy, keys and audit URL.
- :func:`drive`: closed-loop load (``workers`` concurrent clients for ``seconds``), every outcome kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.router.support.fakes import AUTH, b64, write_keys
from tests.support.procs import free_port, process

# Run as modules from the repository root (the working directory of every test process).
FAKE_HASHER = "tests.faults.fake_hasher"
FAKE_EXPLAINER = "tests.faults.fake_explainer"
BACKEND = "hasher-face-v1"
FALLBACK = "hasher-face-v1-fallback"


class FaultProxy:
    """TCP proxy 127.0.0.1:``port`` -> ``upstream``; ``mode`` may change while it runs (see module doc)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self.delay_s = 0.0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "blackhole":
                while await reader.read(65536):
                    continue  # swallow requests, answer nothing
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return  # upstream dead: the client sees the connection close
            await asyncio.gather(self._pipe(reader, up_writer, delay=True), self._pipe(up_reader, writer, delay=False),
                                 return_exceptions=True)
        finally:
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, delay: bool) -> None:
        try:
            while data := await src.read(65536):
                if self.mode == "blackhole":
                    continue  # switched mid-connection: from now on nothing reaches the pod
                if delay and self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(OSError):
                dst.close()


@dataclass
class Hashers:
    """Fake hasher processes behind fault proxies: ``replicas`` of the main backend, one fallback."""

    ports: list[int]
    procs: list = field(default_factory=list)
    proxies: list[FaultProxy] = field(default_factory=list)
    fallback_url: str = ""

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.proxies]


def hasher_argv(port: int) -> list[str]:
    return [sys.executable, "-m", FAKE_HASHER, str(port)]


@contextlib.contextmanager
def hashers(tmp: Path, replicas: int = 2) -> Iterator[Hashers]:
    """``replicas`` fake pods (each behind a :class:`FaultProxy`) plus one fallback pod."""
    with contextlib.ExitStack() as stack:
        out = Hashers(ports=[free_port() for _ in range(replicas)])
        for i, port in enumerate(out.ports):
            out.procs.append(stack.enter_context(
                process(hasher_argv(port), f"http://127.0.0.1:{port}/v2/health/ready", tmp / f"hasher-{i}.log")))
            out.proxies.append(stack.enter_context(FaultProxy(port)))
        fb = free_port()
        stack.enter_context(process(hasher_argv(fb), f"http://127.0.0.1:{fb}/v2/health/ready", tmp / "fallback.log"))
        out.fallback_url = f"http://127.0.0.1:{fb}"
        yield out


def policy(urls: list[str], fallback_url: str, explainer_url: str | None = None) -> dict:
    spec: dict = {
        "backends": {BACKEND: {"endpoints": urls, "fallback": [FALLBACK]},
                     FALLBACK: {"endpoints": [fallback_url], "fallback": []}},
        "routes": {"face": {"arms": [{"name": "v1", "backend": BACKEND, "weight": 100}]}},
    }
    if explainer_url:
        spec["explainer"] = {"endpoints": [explainer_url]}
    return spec


# Fast health checks and a short ejection, so that a few seconds of traffic show every transition.
ROUTER_ENV = {
    "SERVESTACK_ROUTER_HEALTH_INTERVAL_S": "0.5", "SERVESTACK_ROUTER_HEALTH_TIMEOUT_S": "0.5",
    "SERVESTACK_ROUTER_HEALTH_UNHEALTHY_THRESHOLD": "2", "SERVESTACK_ROUTER_POLICY_POLL_S": "0.2",
    "SERVESTACK_ROUTER_LOG_LEVEL": "INFO", "OTEL_SDK_DISABLED": "true",
}


@dataclass
class Router:
    url: str
    proc: object
    log: Path
    policy_path: Path


@contextlib.contextmanager
def start_router(tmp: Path, spec: dict, audit_url: str | None = None, env: Mapping[str, str] | None = None,
                 port: int | None = None) -> Iterator[Router]:
    """A real router process on 127.0.0.1 serving ``spec``; stopped on exit."""
    policy_path = tmp / "policy.yaml"
    if not policy_path.exists():
        policy_path.write_text(yaml.safe_dump(spec))
    keys = tmp / "keys.yaml"
    if not keys.exists():
        write_keys(keys)
    port = port or free_port()
    full_env = {**ROUTER_ENV, "SERVESTACK_ROUTER_PORT": str(port),
                "SERVESTACK_ROUTER_POLICY_PATH": str(policy_path), "SERVESTACK_ROUTER_KEYS_FILE": str(keys),
                "SERVESTACK_ROUTER_AUDIT_URL": audit_url or f"sqlite:///{tmp / 'audit.db'}", **(env or {})}
    log = tmp / f"router-{port}-{time.monotonic_ns()}.log"
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "router"], f"{url}/healthz", log, env=full_env) as proc:
        yield Router(url, proc, log, policy_path)


def face(subject: str) -> dict:
    return {"subject_id": subject, "face": b64(subject.encode())}


async def enroll(client: httpx.AsyncClient, subjects: list[str]) -> None:
    for s in subjects:
        r = await client.post("/v1/enroll", headers=AUTH, json=face(s))
        assert r.status_code == 200, r.text


@dataclass
class Outcome:
    status: int  # 0: no HTTP answer (connect error, reset, client timeout)
    latency_s: float
    body: dict
    headers: Mapping[str, str]
    started: float


@dataclass
class Results:
    outcomes: list[Outcome]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def latency_quantile(self, q: float, outcomes: list[Outcome] | None = None) -> float:
        values = sorted(o.latency_s for o in (self.outcomes if outcomes is None else outcomes))
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def drive(client: httpx.AsyncClient, seconds: float, workers: int, subjects: list[str],
                path: str = "/v1/verify", headers: Mapping[str, str] | None = None,
                client_timeout_s: float = 10.0, during: float | None = None,
                action=None) -> Results:
    """Closed loop: ``workers`` clients each sending one request after another for ``seconds``.

    ``action`` (a plain callable) runs once, ``during`` seconds in, while the load goes on.
    """
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + seconds
    sent_headers = {**AUTH, **(headers or {})}

    async def worker(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            subject = subjects[(i + n) % len(subjects)]
            n += 1
            t0 = time.monotonic()
            try:
                r = await client.post(path, headers=sent_headers, json=face(subject), timeout=client_timeout_s)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                outcomes.append(Outcome(r.status_code, time.monotonic() - t0, body, r.headers, t0))
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(0, time.monotonic() - t0, {"error": repr(exc)}, {}, t0))

    async def act() -> None:
        if action is not None and during is not None:
            await asyncio.sleep(during)
            await asyncio.to_thread(action)

    await asyncio.gather(*(worker(i) for i in range(workers)), act())
    return Results(outcomes)


def metric(router_url: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of a metric's samples on the router's /metrics whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    text = httpx.get(f"{router_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0
