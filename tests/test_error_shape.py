"""One error shape across the router, the hasher pod and the explainer pod.

A body that does not match the schema is, in every component: status 422, ``application/json``,
exactly ``{"error": {"code": "invalid_request", "message": "<loc: msg; ...>"}}``, and the message
never echoes the input. Each app runs in-process (httpx.ASGITransport) with its real exception
handlers; none reaches a model or a pod.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from llm_serving.app import create_app as create_explainer
from llm_serving.config import ExplainerSettings
from llm_serving.generator import GenerationChunk, GenerationRequest
from router.app import create_app as create_router
from router.config import RouterSettings
from servestack.local_config import write_keys, write_policy
from tests.support.generators import StubGenerator
from tracing import TracingSettings, setup_telemetry
from trt_serving.app import create_app as create_hasher
from trt_serving.config import HasherSettings

SECRET = "SECRET-INPUT-7f3a"  # planted in each malformed body: no error message may repeat it
NOT_JSON = b"{" + SECRET.encode() + b" nope"
NO_TRACING = TracingSettings(endpoint=None)


class UncalledGenerator(StubGenerator):
    """The explainer's model seam for requests that must be refused before any generation."""

    model = "none"
    backend = "test"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.calls += 1
        raise AssertionError("a malformed request reached the model")
        yield  # pragma: no cover - makes this an async generator


def assert_invalid_request(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == "invalid_request"
    message = body["error"]["message"]
    assert isinstance(message, str) and message.strip(), body
    assert SECRET not in message, f"the error message echoes the input: {message!r}"
    return message


async def _post(app: object, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post(path, content=content,
                                 headers={"content-type": "application/json", **(headers or {})})


@pytest.fixture
def router_app(tmp_path: Path) -> tuple[object, str]:
    services = {n: "http://127.0.0.1:9" for n in ("hasher-face-v1", "hasher-face-v2", "hasher-fingerprint-v1",
                                                   "explainer")}
    keys, client_key, _ = write_keys(tmp_path)
    settings = RouterSettings(_env_file=None, policy_path=write_policy(tmp_path, services),  # type: ignore[call-arg]
                              keys_file=keys, audit_url=f"sqlite:///{tmp_path / 'audit.db'}")
    return create_router(settings, telemetry=setup_telemetry("servestack-router", "t", NO_TRACING)), client_key


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/verify", NOT_JSON),
    ("/v1/verify", json.dumps({"subject_id": 5, "face": SECRET, "extra": SECRET}).encode()),
    ("/v1/enroll", json.dumps({"subject_id": SECRET}).encode()),
    ("/v1/hash", json.dumps({"modality": "face", "images": SECRET}).encode()),
])
async def test_router_schema_errors(router_app: tuple[object, str], path: str, body: bytes) -> None:
    app, key = router_app
    lifespan = app.router.lifespan_context(app)  # type: ignore[attr-defined]
    async with lifespan:
        response = await _post(app, path, body, {"authorization": f"Bearer {key}"})
    assert_invalid_request(response)


@pytest.mark.parametrize("body", [
    NOT_JSON,
    json.dumps({"images": []}).encode(),
    json.dumps({"images": [SECRET], "unexpected": SECRET}).encode(),
    json.dumps({"images": [5]}).encode(),
])
async def test_hasher_schema_errors(tmp_path: Path, body: bytes) -> None:
    # No lifespan: the engine is never loaded; the body is refused before the handler runs.
    app = create_hasher(HasherSettings(_env_file=None, cache_dir=tmp_path), tracing=NO_TRACING)  # type: ignore[call-arg]
    message = assert_invalid_request(await _post(app, "/v1/hash", body))
    assert ":" in message  # "loc: msg"


@pytest.mark.parametrize("body", [
    NOT_JSON,
    json.dumps({"record": {"audit_id": SECRET}}).encode(),
    json.dumps({"record": SECRET}).encode(),
    json.dumps([SECRET]).encode(),
])
async def test_explainer_schema_errors(body: bytes) -> None:
    generator = UncalledGenerator()
    app = create_explainer(ExplainerSettings(_env_file=None), generator=generator,  # type: ignore[call-arg]
                           telemetry=setup_telemetry("servestack-explainer", "t", NO_TRACING),
                           include_global_metrics=False)
    assert_invalid_request(await _post(app, "/v1/explain", body))
    assert generator.calls == 0
