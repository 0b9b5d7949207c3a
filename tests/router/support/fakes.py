"""Fake pods behind real sockets and an in-process router with its lifespan running (test helpers).

The router under test runs its production transport (router.pod_transport) against fake pods that
are HTTP/1.1 servers on 127.0.0.1: what a test double replaces is the far side of the socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router.app import create_app
from router.auth import hash_key
from router.config import RouterSettings
from tracing import TracingSettings, setup_telemetry

CLIENT_KEY, ADMIN_KEY, LIMITED_KEY = "sk-test-client", "sk-test-admin", "sk-test-limited"
OPS_KEY = "sk-test-ops"  # the admin scope only: refused (403) by the client endpoints
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}


def fake_code(image: bytes, version: str, flip_bits: int = 0) -> str:
    """Deterministic 128-bit code per (image, version); ``flip_bits`` low bits flipped (precision noise)."""
    value = int.from_bytes(hashlib.blake2b(version.encode() + b"|" + image, digest_size=16).digest(), "big")
    return format(value ^ ((1 << flip_bits) - 1), "032x")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Answer:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(payload).encode()


@dataclass
class FakePod:
    """A hasher pod's behaviour; served over a real socket by :class:`Fakes`."""

    model: str
    version: str
    precision: str = "fp32"
    flip_bits: int = 0
    mode: str = "ok"  # ok | fail | reject | hang
    fail_next: int = 0  # answer this many calls with 503 first (a transient failure), then ``mode``
    ready: bool = True
    calls: int = 0
    gate: asyncio.Event | None = None  # mode "hang": wait for it

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v2/health/ready":
            return _json(200 if self.ready else 503, {})
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return _json(503, {"error": {"code": "unavailable", "message": "blip"}})
        if self.mode == "fail":
            return _json(503, {"error": {"code": "unavailable", "message": "down"}})
        if self.mode == "reject":
            return _json(400, {"error": {"code": "invalid_image", "message": "bad"}})
        if self.mode == "hang":
            assert self.gate is not None
            await self.gate.wait()
        images = [base64.b64decode(i, validate=True) for i in json.loads(body)["images"]]
        return _json(200, {
            "engine": {"model": self.model, "version": self.version, "backend": "onnxruntime",
                       "precision": self.precision},
            "codes": [fake_code(i, self.version, self.flip_bits) for i in images],
        })


@dataclass
class FakeExplainer:
    calls: int = 0
    records: list[dict] = field(default_factory=list)  # every record the router sent, in order
    # "ok"; "error": 500; "timeout": the request times out; "cut": one delta, then the stream ends
    mode: str = "ok"

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/readyz":
            return _json(200, {})
        self.calls += 1
        request = json.loads(body)
        rec = request["record"]
        self.records.append(rec)
        if self.mode == "error":
            return _json(500, {"error": {"code": "internal_error", "message": "boom"}})
        if self.mode == "timeout":  # the router's explainer_timeout_s ends the wait
            await asyncio.sleep(3600)
        if self.mode == "cut":
            verdict = "accepted" if rec["decision"] == "accept" else "rejected"
            cut = f'event: delta\ndata: {{"text": "It was {verdict}."}}\n\n'
            return 200, {"content-type": "text/event-stream"}, cut.encode()
        final = {"audit_id": rec["audit_id"], "text": f"The decision was {rec['decision']}.", "source": "model",
                 "model": "fake", "backend": "vllm-cpu"}
        if request.get("stream"):
            text = ("event: delta\ndata: {\"text\": \"The decision\"}\n\n"
                    f"event: final\ndata: {json.dumps(final)}\n\n")
            return 200, {"content-type": "text/event-stream"}, text.encode()
        return _json(200, final)


Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[Answer]]


class FakeHttpServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 (asyncio streams) in front of one fake's handler.

    The router reaches it through its production transport, as it reaches a pod. ``stop`` closes
    the listening socket and every open connection (the pod is down: connection refused);
    ``start`` listens again on the same port.
    """

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                status, out_headers, payload = await self.handler(method, target.split("?", 1)[0], headers, body)
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\n".encode()
                             + "".join(f"{k}: {v}\r\n" for k, v in out_headers.items()).encode() + b"\r\n"
                             + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client went away
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()


def _closed_port() -> int:
    """A port nothing listens on (connection refused), for a replica that does not exist."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXPLAINER_URL = "http://explainer:8200"


@dataclass
class Fakes:
    """Fake pods by the symbolic URL tests name them by; each served on its own 127.0.0.1 port.

    The policy a test writes names ``http://face-v1a:8080``; :meth:`resolve` rewrites it to the
    fake's real address (an unknown name to a port nothing listens on).
    """

    pods: dict[str, FakePod] = field(default_factory=dict)  # symbolic base URL -> pod
    explainer: FakeExplainer = field(default_factory=FakeExplainer)
    servers: dict[str, FakeHttpServer] = field(default_factory=dict)
    _refused: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        """Serve every fake (again on its former port after :meth:`stop`: URLs stay stable)."""
        for name in [*self.pods, EXPLAINER_URL]:
            server = self.servers.get(name)
            if server is None:
                server = self.servers[name] = FakeHttpServer(self._handler(name))
            if not server.running:
                await server.start()

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()

    def _handler(self, name: str) -> Handler:
        # Looked up per request: a test may swap the pod behind a name while the router runs.
        async def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
            fake = self.explainer if name == EXPLAINER_URL else self.pods[name]
            return await fake.handle(method, path, headers, body)

        return handle

    def url(self, name: str) -> str:
        """The real base URL of the fake called ``name`` (or a refusing port for an unknown name)."""
        if name in self.servers:
            return self.servers[name].url
        if name not in self._refused:
            self._refused[name] = f"http://127.0.0.1:{_closed_port()}"
        return self._refused[name]

    def resolve(self, policy: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``policy`` whose endpoint URLs point at the fakes' sockets."""
        out = copy.deepcopy(policy)
        for backend in [*out["backends"].values(), out.get("explainer") or {}]:
            if "endpoints" in backend:
                backend["endpoints"] = [self.url(u) for u in backend["endpoints"]]
        return out

    async def take_down(self, name: str) -> None:
        """The pod stops listening and drops its connections (connection refused from now on)."""
        await self.servers[name].stop()

    async def bring_up(self, name: str) -> None:
        await self.servers[name].start()


def standard_fakes() -> Fakes:
    return Fakes(pods={
        "http://face-v1a:8080": FakePod("face", "1"),
        "http://face-v2a:8080": FakePod("face", "2"),
        "http://finger-v1a:8080": FakePod("fingerprint", "1"),
    })


def standard_policy(v1_weight: float = 90, v2_weight: float = 10, shadow_percent: float = 0) -> dict[str, Any]:
    return {
        "backends": {
            "hasher-face-v1": {"endpoints": ["http://face-v1a:8080"], "fallback": []},
            "hasher-face-v2": {"endpoints": ["http://face-v2a:8080"], "fallback": ["hasher-face-v1"]},
            "hasher-fingerprint-v1": {"endpoints": ["http://finger-v1a:8080"]},
        },
        "explainer": {"endpoints": ["http://explainer:8200"]},
        "routes": {
            "face": {"experiment": "face-v2", "sticky_key": "subject_id",
                     "arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": v1_weight},
                              {"name": "v2", "backend": "hasher-face-v2", "weight": v2_weight}],
                     "shadow": {"arm": "v2", "percent": shadow_percent}},
            "fingerprint": {"arms": [{"name": "v1", "backend": "hasher-fingerprint-v1", "weight": 100}]},
        },
    }


def write_keys(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"keys": [
        {"name": "client", "sha256": hash_key(CLIENT_KEY), "scopes": ["client", "pin"], "rate_per_s": 10000,
         "burst": 10000},
        {"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["client", "pin", "enroll:replace", "admin"],
         "rate_per_s": 10000,
         "burst": 10000},
        {"name": "limited", "sha256": hash_key(LIMITED_KEY), "scopes": ["client"], "rate_per_s": 0.5, "burst": 2},
        {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["admin"]},
    ]}))
    return path


@dataclass
class RouterHarness:
    app: Any
    client: httpx.AsyncClient
    fakes: Fakes
    spans: InMemorySpanExporter
    policy_path: Path

    def write_policy(self, policy: dict[str, Any]) -> None:
        """Replace the policy file (picked up by the router's watcher), endpoints resolved to the fakes."""
        self.policy_path.write_text(yaml.safe_dump(self.fakes.resolve(policy)))

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_router(tmp_path: Path, fakes: Fakes | None = None, policy: dict | None = None,
                         **overrides: Any) -> AsyncIterator[RouterHarness]:
    fakes = fakes or standard_fakes()
    await fakes.start()
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(fakes.resolve(policy or standard_policy())))
    values: dict[str, Any] = {
        "policy_path": policy_path, "keys_file": write_keys(tmp_path / "keys.yaml"),
        "audit_url": f"sqlite:///{tmp_path / 'audit.db'}", "health_interval_s": 60.0,
        "retry_backoff_base_s": 0.001, "policy_poll_s": 0.05,
        "gc_freeze": False, "gc_gen0_threshold": 0,  # the test runner's heap and GC are not the app's
    }
    values.update(overrides)
    settings = RouterSettings(**values)
    telemetry = setup_telemetry("servestack-router", "test", TracingSettings(endpoint=None))
    spans = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(settings, telemetry=telemetry)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                yield RouterHarness(app, client, fakes, spans, policy_path)
    finally:
        await fakes.stop()


def two_replica_fakes(first_mode: str = "ok") -> tuple[Fakes, dict]:
    """The standard fakes with a second face-v2 replica (the first in ``first_mode``), and its policy."""
    fakes = Fakes(pods={
        "http://face-v1a:8080": FakePod("face", "1"),
        "http://face-v2a:8080": FakePod("face", "2", mode=first_mode),
        "http://face-v2b:8080": FakePod("face", "2"),
        "http://finger-v1a:8080": FakePod("fingerprint", "1"),
    })
    policy = standard_policy()
    policy["backends"]["hasher-face-v2"]["endpoints"] = ["http://face-v2a:8080", "http://face-v2b:8080"]
    return fakes, policy


async def enroll(router: RouterHarness, subject: str, **images: bytes) -> dict:
    """Enrol ``subject`` with ``images`` (modality -> raw bytes); asserts a 200."""
    r = await router.client.post("/v1/enroll", headers=AUTH,
                                 json={"subject_id": subject, **{k: b64(v) for k, v in images.items()}})
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    """``r`` is the router's error shape with this status and code, and a message."""
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
