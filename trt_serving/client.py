"""Typed async client of the hasher pod for the router: httpx + schemas only (no torch).

Errors: :class:`HasherUnavailable` (connect error, timeout, 5xx: retry elsewhere) and
:class:`HasherRejected` (4xx: the input's fault, do not retry).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import httpx

from trt_serving.schemas import HashRequest, HashResponse


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


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        err = response.json().get("error", {})
        return str(err.get("code", "http_error")), str(err.get("message", response.text[:200]))
    except (ValueError, AttributeError):
        return "http_error", response.text[:200]


class HasherClient:
    """One shared ``httpx.AsyncClient`` (opened by the caller's lifespan), any number of pods."""

    def __init__(self, http: httpx.AsyncClient):
        self._http = http

    async def hash(self, base_url: str, images: Sequence[bytes], *, timeout_s: float,
                   headers: Mapping[str, str] | None = None) -> HashResponse:
        body = HashRequest(images=[base64.b64encode(img).decode("ascii") for img in images])
        try:
            # pydantic's serialiser writes the (large) base64 strings faster than json.dumps of a dict.
            response = await self._http.post(f"{base_url.rstrip('/')}/v1/hash", content=body.model_dump_json(),
                                             headers={"content-type": "application/json", **(headers or {})},
                                             timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise HasherUnavailable(f"hasher {base_url} timed out after {timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise HasherUnavailable(f"hasher {base_url} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            code, message = _error_of(response)
            retry_after = response.headers.get("Retry-After")
            raise HasherUnavailable(f"hasher {base_url}: {response.status_code} {message}",
                                    status=response.status_code, code=code,
                                    retry_after_s=float(retry_after) if retry_after and retry_after.isdigit()
                                    else None)
        if response.status_code >= 400:
            code, message = _error_of(response)
            raise HasherRejected(message, status=response.status_code, code=code)
        try:
            return HashResponse.model_validate_json(response.content)
        except ValueError as exc:
            raise HasherUnavailable(f"hasher {base_url} sent an invalid response: {exc}",
                                    status=response.status_code) from exc

    async def ready(self, base_url: str, *, timeout_s: float) -> bool:
        try:
            response = await self._http.get(f"{base_url.rstrip('/')}/v2/health/ready", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200
