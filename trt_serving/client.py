"""Typed async client of the hasher pod for the router: httpx + schemas only (no torch).

Errors: :class:`HasherUnavailable` (connect error, timeout, 5xx: retry elsewhere) and
:class:`HasherRejected` (4xx: the input's fault, do not retry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Protocol

import httpx

from trt_serving.schemas import HashResponse


class HasherError(Exception):
    """Base of the client's errors; ``status`` is the HTTP status when there was a response."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class HasherUnavailable(HasherError):
    """Connect error, timeout or 5xx: retryable on another replica or backend."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s


class HasherRejected(HasherError):
    """4xx: the request itself is wrong (bad image, bad base64); retrying will not help."""


def _error_of(content: bytes) -> tuple[str, str]:
    try:
        err = json.loads(content).get("error", {})
        return str(err.get("code", "http_error")), str(err.get("message", content[:200].decode("utf-8", "replace")))
    except (ValueError, AttributeError):
        return "http_error", content[:200].decode("utf-8", "replace")


class PodRequests(Protocol):
    """Sends one whole request and reads the whole response, as bytes (``router.pod_transport``).

    Raises httpx's transport errors (``httpx.TimeoutException``, ``httpx.TransportError``).
    """

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str], *,
                      timeout_s: float) -> tuple[int, Sequence[tuple[bytes, bytes]], bytes]: ...


class _OverHttpx:
    """:class:`PodRequests` over any ``httpx.AsyncClient`` (tools and tests without the router)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str], *,
                      timeout_s: float) -> tuple[int, Sequence[tuple[bytes, bytes]], bytes]:
        response = await self._http.request(method, url, content=body, headers=headers, timeout=timeout_s)
        return response.status_code, response.headers.raw, response.content


_JSON = {"content-type": "application/json", "accept": "application/json"}


class HasherClient:
    """Calls to any number of hasher pods over one connection pool (opened by the caller's lifespan).

    Args:
        pods: what carries the requests: the router's ``PodTransport`` (the same pool as its shared
            ``httpx.AsyncClient``), or an ``httpx.AsyncClient``.
    """

    def __init__(self, pods: PodRequests | httpx.AsyncClient) -> None:
        self._pods: PodRequests = _OverHttpx(pods) if isinstance(pods, httpx.AsyncClient) else pods

    async def hash(self, base_url: str, images: Sequence[str], *, timeout_s: float,
                   headers: Mapping[str, str] | None = None) -> HashResponse:
        """Codes of ``images``: base64 text as the caller received it, already checked to hold only
        the base64 alphabet (``router.schemas.check_image``), so it is forwarded without decoding,
        re-encoding or JSON escaping."""
        # A HashRequest, written directly: building the model only to dump it again (validation
        # included) was ~3% of the router's CPU per hash.
        body = ('{"images":["' + '","'.join(images) + '"]}').encode("ascii")
        try:
            status, response_headers, content = await self._pods.request(
                "POST", f"{base_url.rstrip('/')}/v1/hash", body, {**_JSON, **(headers or {})}, timeout_s=timeout_s)
        except httpx.TimeoutException as exc:
            raise HasherUnavailable(f"hasher {base_url} timed out after {timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise HasherUnavailable(f"hasher {base_url} unreachable: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            code, message = _error_of(content)
            retry_after = next((v.decode("latin-1") for k, v in response_headers if k.lower() == b"retry-after"), "")
            raise HasherUnavailable(f"hasher {base_url}: {status} {message}", status=status, code=code,
                                    retry_after_s=float(retry_after) if retry_after.isdigit() else None)
        if status >= 400:
            code, message = _error_of(content)
            raise HasherRejected(message, status=status, code=code)
        try:
            return HashResponse.model_validate_json(content)
        except ValueError as exc:
            raise HasherUnavailable(f"hasher {base_url} sent an invalid response: {exc}", status=status) from exc

    async def ready(self, base_url: str, *, timeout_s: float) -> bool:
        try:
            status, _, _ = await self._pods.request("GET", f"{base_url.rstrip('/')}/v2/health/ready", b"", {},
                                                    timeout_s=timeout_s)
        except (httpx.HTTPError, TimeoutError):
            return False
        return status == 200
