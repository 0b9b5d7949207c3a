"""Fake pods (httpx.MockTransport) and an in-process router with its lifespan running (helpers)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
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
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}


def fake_code(image: bytes, version: str, flip_bits: int = 0) -> str:
    """Deterministic 128-bit code per (image, version); ``flip_bits`` low bits flipped (precision noise)."""
    value = int.from_bytes(hashlib.blake2b(version.encode() + b"|" + image, digest_size=16).digest(), "big")
    return format(value ^ ((1 << flip_bits) - 1), "032x")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class FakePod:
    model: str
    version: str
    precision: str = "fp32"
    flip_bits: int = 0
    mode: str = "ok"  # ok | fail | reject | hang
    fail_next: int = 0  # answer this many calls with 503 first (a transient failure), then ``mode``
    ready: bool = True
    calls: int = 0
    gate: asyncio.Event | None = None  # mode "hang": wait for it

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/health/ready":
            return httpx.Response(200 if self.ready else 503)
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "blip"}})
        if self.mode == "fail":
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "down"}})
        if self.mode == "reject":
            return httpx.Response(400, json={"error": {"code": "invalid_image", "message": "bad"}})
        if self.mode == "hang":
            assert self.gate is not None
            await self.gate.wait()
        images = [base64.b64decode(i) for i in json.loads(request.content)["images"]]
        return httpx.Response(200, json={
            "engine": {"model": self.model, "version": self.version, "backend": "onnxruntime",
                       "precision": self.precision},
            "codes": [fake_code(i, self.version, self.flip_bits) for i in images],
        })


@dataclass
class FakeExplainer:
    calls: int = 0
    # "ok"; "error": 500; "timeout": the request times out; "cut": one delta, then the stream ends
    mode: str = "ok"

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200)
        self.calls += 1
        body = json.loads(request.content)
        rec = body["record"]
        if self.mode == "error":
            return httpx.Response(500, json={"error": {"code": "internal_error", "message": "boom"}})
        if self.mode == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "cut":
            verdict = "accepted" if rec["decision"] == "accept" else "rejected"
            return httpx.Response(200, text=f"event: delta\ndata: {{\"text\": \"It was {verdict}.\"}}\n\n",
                                  headers={"content-type": "text/event-stream"})
        final = {"audit_id": rec["audit_id"], "text": f"The decision was {rec['decision']}.", "source": "model",
                 "model": "fake", "backend": "vllm-cpu"}
        if body.get("stream"):
            text = ("event: delta\ndata: {\"text\": \"The decision\"}\n\n"
                    f"event: final\ndata: {json.dumps(final)}\n\n")
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=final)


@dataclass
class Fakes:
    pods: dict[str, FakePod] = field(default_factory=dict)  # base URL -> pod
    explainer: FakeExplainer = field(default_factory=FakeExplainer)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base == "http://explainer:8200":
            return await self.explainer.handle(request)
        pod = self.pods.get(base)
        if pod is None:
            raise httpx.ConnectError("connection refused", request=request)
        return await pod.handle(request)


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
        {"name": "client", "sha256": hash_key(CLIENT_KEY), "scopes": ["client"], "rate_per_s": 10000,
         "burst": 10000},
        {"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["client", "admin"], "rate_per_s": 10000,
         "burst": 10000},
        {"name": "limited", "sha256": hash_key(LIMITED_KEY), "scopes": ["client"], "rate_per_s": 0.5, "burst": 2},
    ]}))
    return path


@dataclass
class RouterHarness:
    app: Any
    client: httpx.AsyncClient
    fakes: Fakes
    spans: InMemorySpanExporter
    policy_path: Path

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_router(tmp_path: Path, fakes: Fakes | None = None, policy: dict | None = None,
                         **overrides: Any) -> AsyncIterator[RouterHarness]:
    fakes = fakes or standard_fakes()
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy or standard_policy()))
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
    app = create_app(settings, telemetry=telemetry, transport=httpx.MockTransport(fakes.handler))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            yield RouterHarness(app, client, fakes, spans, policy_path)
