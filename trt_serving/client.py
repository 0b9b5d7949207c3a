"""Typed async client of the hasher pod for the router: httpx + schemas only (no torch).

Errors: :class:`HasherUnavailable` (connect error, timeout, 5xx: retry elsewhere) and
:class:`HasherRejected` (4xx: the input's fault, do not retry).
"""

from __future__ import annotations

import base64
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


class RawRoundTrip(Protocol):
    """A transport that sends prebuilt HTTP/1.1 request bytes (``router.keepalive_transport``)."""

    async def roundtrip(self, host: str, port: int, payload: bytes, *, connect_timeout: float | None,
                        read_timeout: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]: ...


class HasherClient:
    """One shared ``httpx.AsyncClient`` (opened by the caller's lifespan), any number of pods.

    Args:
        http: the client for every call (and for ``/v1/hash`` when ``raw`` is not given).
        raw: a transport taking request bytes; when given, ``/v1/hash`` to an ``http://`` pod is
            written and read through it directly. The hot path: httpx's request and response
            models and client machinery were ~15% of the router's CPU on a proxied hash.
    """

    def __init__(self, http: httpx.AsyncClient, raw: RawRoundTrip | None = None):
        self._http = http
        self._raw = raw
        self._heads: dict[str, tuple[str, int, bytes]] = {}

    async def hash(self, base_url: str, images: Sequence[bytes], *, timeout_s: float,
                   headers: Mapping[str, str] | None = None) -> HashResponse:
        # A HashRequest, written directly: base64 needs no JSON escaping, and building the model
        # only to dump it again (validation included) was ~3% of the router's CPU per hash.
        body = '{"images":["' + '","'.join(base64.b64encode(img).decode("ascii") for img in images) + '"]}'
        try:
            if self._raw is not None and base_url.startswith("http://"):
                status, retry_after, content = await self._post_raw(self._raw, base_url, body.encode(),
                                                                    headers or {}, timeout_s)
            else:
                response = await self._http.post(f"{base_url.rstrip('/')}/v1/hash", content=body,
                                                 headers={"content-type": "application/json", **(headers or {})},
                                                 timeout=timeout_s)
                status, retry_after, content = (response.status_code, response.headers.get("Retry-After"),
                                                response.content)
        except httpx.TimeoutException as exc:
            raise HasherUnavailable(f"hasher {base_url} timed out after {timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise HasherUnavailable(f"hasher {base_url} unreachable: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            code, message = _error_of(content)
            raise HasherUnavailable(f"hasher {base_url}: {status} {message}", status=status, code=code,
                                    retry_after_s=float(retry_after) if retry_after and retry_after.isdigit()
                                    else None)
        if status >= 400:
            code, message = _error_of(content)
            raise HasherRejected(message, status=status, code=code)
        try:
            return HashResponse.model_validate_json(content)
        except ValueError as exc:
            raise HasherUnavailable(f"hasher {base_url} sent an invalid response: {exc}", status=status) from exc

    async def _post_raw(self, raw: RawRoundTrip, base_url: str, body: bytes, headers: Mapping[str, str],
                        timeout_s: float) -> tuple[int, str | None, bytes]:
        target = self._heads.get(base_url)
        if target is None:
            url = httpx.URL(base_url)
            netloc = url.netloc.decode("ascii")
            head = f"POST {url.path.rstrip('/')}/v1/hash HTTP/1.1\r\nhost: {netloc}\r\n" \
                   "content-type: application/json\r\naccept: application/json\r\n"
            target = self._heads[base_url] = (url.host, url.port or 80, head.encode("ascii"))
        host, port, head = target
        lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
        if any("\r" in line[:-2] or "\n" in line[:-2] for line in lines):
            raise ValueError("header names and values may not contain CR or LF")  # no header injection
        extra = "".join(lines)
        payload = b"".join((head, extra.encode("latin-1"), b"content-length: %d\r\n\r\n" % len(body), body))
        status, _, response_headers, content = await raw.roundtrip(host, port, payload, connect_timeout=timeout_s,
                                                                   read_timeout=timeout_s)
        retry_after = next((v.decode("latin-1") for k, v in response_headers if k.lower() == b"retry-after"), None)
        return status, retry_after, content

    async def ready(self, base_url: str, *, timeout_s: float) -> bool:
        try:
            response = await self._http.get(f"{base_url.rstrip('/')}/v2/health/ready", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200
