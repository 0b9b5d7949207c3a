"""ExplainerClient.ready: the router's active health check of the explainer."""

from __future__ import annotations

import httpx

from llm_serving.client import ExplainerClient


async def test_ready_is_true_only_on_200_and_never_raises() -> None:
    answers = {"http://up": 200, "http://loading": 503}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/readyz"
        base = f"{request.url.scheme}://{request.url.host}"
        if base not in answers:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(answers[base], json={})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ExplainerClient(http)
        assert await client.ready("http://up/", timeout_s=1) is True
        assert await client.ready("http://loading", timeout_s=1) is False
        assert await client.ready("http://down", timeout_s=1) is False
