"""Typed async client of the explainer pod (imports only httpx and the wire schemas).

The router uses it to fetch (and stream) explanations of audit records.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from llm_serving.schemas import AuditFacts, ExplainRequest, Explanation


class ExplainerError(Exception):
    """Base of the client's errors."""


class ExplainerUnavailable(ExplainerError):
    """Connect error, timeout, 5xx or 503 while loading: retryable elsewhere or later."""


class ExplainerRejected(ExplainerError):
    """4xx: the record was refused (missing fields, impossible values, too large)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


def _error_of(response: httpx.Response, body: bytes) -> ExplainerError:
    try:
        err = json.loads(body).get("error", {})
        code, message = str(err.get("code", "error")), str(err.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "error", body[:200].decode("utf-8", "replace")
    if response.status_code >= 500 or response.status_code == 429:
        return ExplainerUnavailable(f"explainer answered {response.status_code} {code}: {message}")
    return ExplainerRejected(response.status_code, code, message)


class ExplainerClient:
    """One shared ``httpx.AsyncClient`` (owned by the caller); explicit timeout on every call."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def explain(
        self, base_url: str, facts: AuditFacts, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> Explanation:
        body = ExplainRequest(record=facts, stream=False).model_dump(mode="json")
        try:
            response = await self._http.post(
                f"{base_url.rstrip('/')}/v1/explain", json=body, headers=dict(headers or {}), timeout=timeout_s
            )
        except httpx.TransportError as exc:  # connect errors and timeouts alike
            raise ExplainerUnavailable(f"explainer unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise _error_of(response, response.content)
        return Explanation.model_validate_json(response.content)

    async def ready(self, base_url: str, *, timeout_s: float) -> bool:
        """True when the explainer answers /readyz with 200 (its model is loaded); never raises."""
        try:
            response = await self._http.get(f"{base_url.rstrip('/')}/readyz", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def stream(
        self, base_url: str, facts: AuditFacts, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` pairs: ``delta`` events, then one ``final`` (or ``error``)."""
        body = ExplainRequest(record=facts, stream=True).model_dump(mode="json")
        request_headers = {**dict(headers or {}), "Accept": "text/event-stream"}
        try:
            async with self._http.stream(
                "POST", f"{base_url.rstrip('/')}/v1/explain", json=body, headers=request_headers, timeout=timeout_s
            ) as response:
                if response.status_code != 200:
                    raise _error_of(response, await response.aread())
                event, data_lines = "message", list[str]()
                async for line in response.aiter_lines():
                    if line == "":
                        if data_lines:
                            yield event, json.loads("\n".join(data_lines))
                        event, data_lines = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data_lines.append(line[5:].lstrip())
                if data_lines:
                    yield event, json.loads("\n".join(data_lines))
        except httpx.TransportError as exc:
            raise ExplainerUnavailable(f"explainer stream failed: {type(exc).__name__}") from exc
