"""Direct ASGI handling of the hot JSON endpoints: POST /v1/hash, /v1/verify and /v1/enroll.

FastAPI's per-request machinery (routing by regex over every route, dependency solving, the body
parsed to a dict and then validated, Request and Response objects) was ~20% of the router's CPU on
a proxied hash (py-spy, BENCHMARKS.md). These endpoints have a fixed path, one JSON body, the
client scope and one flow call each, so this middleware serves them itself: the body is validated
straight from its bytes by pydantic and the answer written as bytes.

The contract is the FastAPI routes' in :mod:`router.endpoints`, which stay the OpenAPI declaration
and serve when the fast path is off (``SERVESTACK_ROUTER_FAST_PATH=false``): the same auth (and its
span), the same models, the same error codes; ``scope["route"]`` is set to the declared route, so
metrics and span names are those of the route template. The difference: the key is checked before
the body is parsed, so an unauthenticated caller gets its 401 without the router parsing its body.
Exceptions that are not the router's own propagate to the app's 500 handler, as from a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from router.deps import authenticate, caller_of
from router.errors import InvalidRequest, RouterError, describe_validation, error_body
from router.flow import Caller, VerificationService
from router.schemas import EnrollRequest, HashApiRequest, VerifyRequest

Flow = Callable[[VerificationService, Any, Caller], Awaitable[BaseModel]]


@dataclass(frozen=True)
class JsonEndpoint:
    """One POST endpoint: its body model, the flow call, and the FastAPI route declaring it."""

    model: type[BaseModel]
    call: Flow
    route: Any = None


ENDPOINTS: dict[str, JsonEndpoint] = {
    "/v1/hash": JsonEndpoint(HashApiRequest, VerificationService.hash),
    "/v1/verify": JsonEndpoint(VerifyRequest, VerificationService.verify),
    "/v1/enroll": JsonEndpoint(EnrollRequest, VerificationService.enroll),
}
_JSON = [(b"content-type", b"application/json")]


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastPathMiddleware:
    """Serve ``endpoints`` (path -> :class:`JsonEndpoint`) directly; everything else goes to ``app``.

    Args:
        app: the wrapped ASGI app (the FastAPI router).
        endpoints: the POST paths served here; each ``route`` is the FastAPI route declaring it.
    """

    def __init__(self, app: Any, endpoints: dict[str, JsonEndpoint]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = endpoint.route
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body = 200, await self._serve(endpoint, scope, receive)
        except RouterError as exc:
            status, body = exc.status, error_body(exc.code, exc.message)
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers().items()]
        except _Disconnected:
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _serve(self, endpoint: JsonEndpoint, scope: dict[str, Any], receive: Any) -> bytes:
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # lower-case names (ASGI); the first of repeated headers wins
            name = k.decode("latin-1")
            if name not in headers:
                headers[name] = v.decode("latin-1")
        state = scope["app"].state
        authenticate(state, headers, "client")
        content_type = headers.get("content-type")
        if content_type is not None and not _is_json(content_type):
            raise InvalidRequest(f"body: expected JSON (content-type application/json), got {content_type!r}")
        raw = await _read_body(receive)
        try:
            body = endpoint.model.model_validate_json(raw)
        except ValidationError as exc:
            # loc + msg only: the offending input may be an image and must not be echoed or logged.
            raise InvalidRequest(describe_validation(exc.errors(include_url=False), ("body",))) from None
        result = await endpoint.call(state.flow, body, caller_of(headers))
        return result.model_dump_json().encode()
